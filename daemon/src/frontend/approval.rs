//! Confirmation from another device. A key marked for confirmation on a
//! device with nobody at it (no display, no terminal: askpass is
//! headless) asks the account's other devices instead: the request goes
//! to the account ([`Command::AskApproval`]), which writes it to the
//! Application catalog; the answer comes back by sync, signed by the
//! device that gave it and bound to the request, and is read from the
//! account's view. No answer within the timeout is a no.
//!
//! On the other side, [`answer_through`] shows each request from another
//! device to this device's person through askpass (`mesh-askpass` on a
//! desktop) as it arrives; `mesh approve` does the same on a terminal.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use mesh_ipc::control::{ApprovalRow, Response};

use crate::account::{Command, Handle, Question, now_ms};
use crate::keystore::confirm::Askpass;

/// The account's other devices, as the ones to ask.
#[derive(Debug, Clone)]
pub struct Remote {
    /// The account.
    pub account: Handle,
    /// How long to wait for an answer.
    pub timeout: Duration,
}

/// How many questions from other devices are shown at once.
const SHOWN_AT_ONCE: usize = 4;

impl Remote {
    /// Ask, and wait for the answer: true only on a yes, signed by
    /// another device of the account, for this request.
    pub async fn ask(&self, mut question: Question) -> bool {
        question.expires_in = self.timeout;
        let asked = self
            .account
            .run(Command::AskApproval(Box::new(question)))
            .await;
        let id = match asked {
            Ok(Response::Approvals { requests }) if requests.len() == 1 => requests[0].id.clone(),
            Ok(_) => return false,
            Err(err) => {
                tracing::warn!(error = %err, "cannot ask the account's other devices");
                return false;
            }
        };
        tracing::info!(%id, "asked the account's other devices to approve a use of a key");
        let mut views = self.account.views();
        let answer = tokio::time::timeout(self.timeout, async {
            loop {
                let answered = match &views.borrow_and_update().approvals {
                    Ok(approvals) => approvals.answered.get(&id).copied(),
                    Err(_) => None,
                };
                if let Some(approved) = answered {
                    return approved;
                }
                if views.changed().await.is_err() {
                    return false;
                }
            }
        })
        .await;
        let approved = match answer {
            Ok(approved) => {
                tracing::info!(%id, approved, "another device answered");
                approved
            }
            Err(_) => {
                tracing::warn!(%id, "no device answered in time: denied");
                false
            }
        };
        // The request is done with either way; the signer does not wait
        // for its deletion.
        let account = self.account.clone();
        tokio::spawn(async move {
            if let Err(err) = account.run(Command::WithdrawApproval { id }).await {
                tracing::warn!(error = %err, "cannot withdraw an approval request");
            }
        });
        approved
    }
}

/// Ask before a key is used: the person here through askpass, or, with
/// nobody here and an account to ask, the account's other devices.
pub async fn confirm(
    askpass: &Askpass,
    remote: Option<&Remote>,
    prompt: &str,
    question: impl FnOnce() -> Question,
) -> bool {
    match remote {
        Some(remote) if askpass.is_headless() => remote.ask(question()).await,
        _ => askpass.confirm(prompt).await,
    }
}

/// Show other devices' approval requests to the person here, through
/// askpass, as they arrive, and send each answer back through the
/// account. Runs until the account's task stops; meant for a device with
/// somebody at it (askpass not headless).
pub async fn answer_through(askpass: Askpass, account: Handle) {
    let mut views = account.views();
    let mut shown: BTreeSet<String> = BTreeSet::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(SHOWN_AT_ONCE));
    loop {
        let waiting: Vec<ApprovalRow> = match &views.borrow_and_update().approvals {
            Ok(approvals) => approvals.waiting.clone(),
            Err(_) => Vec::new(),
        };
        // Forget what is no longer waiting (answered, withdrawn).
        shown.retain(|id| waiting.iter().any(|r| &r.id == id));
        for row in waiting {
            if shown.contains(&row.id) || row.expires_ms <= now_ms() {
                continue;
            }
            let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                break;
            };
            shown.insert(row.id.clone());
            let (askpass, account) = (askpass.clone(), account.clone());
            tokio::spawn(async move {
                let approved = askpass.confirm(&row.question()).await;
                let answer = Command::AnswerApproval {
                    id: row.id.clone(),
                    approved,
                };
                match account.run(answer).await {
                    Ok(_) => tracing::info!(id = %row.id, approved, "answered an approval request"),
                    Err(err) => tracing::warn!(error = %err, "cannot answer an approval request"),
                }
                drop(slot);
            });
        }
        if views.changed().await.is_err() {
            return;
        }
    }
}
