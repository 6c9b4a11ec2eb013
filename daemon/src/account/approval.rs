//! Approval from another device: a device asked to confirm a use of a key
//! with nobody at it (no display, no terminal) writes an
//! [`ApprovalRequest`] to the Application catalog; the account's other
//! devices show it to their person, and one writes the signed
//! [`ApprovalAnswer`], bound to the request by its id and its digest.
//! Both travel through the service like every entry: signed, in the
//! account's Merkle log, checked by every reader (the ledger's rule 7 says
//! who writes which). The asking device deletes its request when it is
//! done with it, and the answering device its answer once the request is
//! gone.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use mesh_ipc::control::{ApprovalRow, Response};
use mesh_protocol::account::Store;
use mesh_protocol::application::{
    ANSWER_MESSAGE_TYPE, APPROVAL_MESSAGE_TYPE, APPROVAL_PREFIX, ApprovalAnswer, ApprovalRequest,
    MAX_APPROVAL_FIELD,
};
use mesh_protocol::envelope::Event;
use rand_core::{OsRng, RngCore as _};

use super::{Account, AccountError, now_ms};

/// What a device asks the others about a use of a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    /// `ssh`, `gpg sign`, `gpg decrypt`.
    pub operation: String,
    /// The key's name.
    pub key: String,
    /// Its fingerprint.
    pub fingerprint: String,
    /// Where it logs in, when the connection said.
    pub host: Option<String>,
    /// As whom.
    pub user: Option<String>,
    /// The program that asked.
    pub program: Option<String>,
    /// How long an answer counts.
    pub expires_in: Duration,
}

/// Where this device's approvals stand, as of the account's last change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Approvals {
    /// This device's requests another device answered: id to yes or no.
    pub answered: BTreeMap<String, bool>,
    /// Other devices' requests no device has answered yet, oldest first
    /// (expired ones left out).
    pub waiting: Vec<ApprovalRow>,
}

/// Live requests by id: each with its digest.
type Requests = BTreeMap<String, (ApprovalRequest, String)>;

/// Live answers by the id of the request they answer.
type Answers = BTreeMap<String, ApprovalAnswer>;

/// A field cut to its bound (on a char boundary).
fn bounded(mut text: String) -> String {
    if text.len() > MAX_APPROVAL_FIELD {
        let mut end = MAX_APPROVAL_FIELD;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

pub(super) fn digest_text(digest: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest)
}

impl Account {
    pub(super) fn own_udf(&self) -> Result<String, AccountError> {
        self.device
            .as_ref()
            .map(|d| d.udf().to_string())
            .ok_or(AccountError::NoAccount)
    }

    /// The live approval requests and answers, opened: request id to the
    /// request and its digest; request id to its answer.
    fn approval_entries(&self) -> Result<(Requests, Answers), AccountError> {
        let mut requests = BTreeMap::new();
        let mut answers = BTreeMap::new();
        let entries = self.open_live_where(Store::Application, |live| {
            live.message_type == APPROVAL_MESSAGE_TYPE || live.message_type == ANSWER_MESSAGE_TYPE
        })?;
        for (id, verified) in entries {
            if verified.head.message_type == APPROVAL_MESSAGE_TYPE {
                if let Some(request) = verified.record::<ApprovalRequest>() {
                    requests.insert(id, (request, digest_text(&verified.digest)));
                }
            } else if let Some(answer) = verified.record::<ApprovalAnswer>() {
                answers.insert(answer.request.clone(), answer);
            }
        }
        Ok((requests, answers))
    }

    /// Ask the account's other devices: write the request; its row (with
    /// the id to wait for) is the answer.
    pub(super) async fn ask_approval(
        &mut self,
        question: Question,
    ) -> Result<Response, AccountError> {
        let store_key = self.store_key(Store::Application)?.public();
        let device = self.own_udf()?;
        if self.devices()?.iter().all(|(_, d)| d.device_udf == device) {
            return Err(AccountError::Input(
                "no other device in the account to ask".into(),
            ));
        }
        let mut nonce = [0u8; 16];
        OsRng.fill_bytes(&mut nonce);
        let id = format!("{APPROVAL_PREFIX}{device}/{}", digest_text(&nonce));
        let asked_ms = now_ms();
        let expires_ms = asked_ms
            .saturating_add(u64::try_from(question.expires_in.as_millis()).unwrap_or(u64::MAX));
        let request = ApprovalRequest {
            device,
            operation: bounded(question.operation),
            key: bounded(question.key),
            fingerprint: bounded(question.fingerprint),
            host: question.host.map(bounded),
            user: question.user.map(bounded),
            program: question.program.map(bounded),
            asked_ms,
            expires_ms,
        };
        let entry = self.entry(
            Store::Application,
            &id,
            Event::New,
            APPROVAL_MESSAGE_TYPE,
            Some(&request),
            &self.activation()?.sign,
            &[store_key],
        )?;
        self.transact(vec![(Store::Application, vec![entry])], Vec::new())
            .await?;
        let name = self.device_name(&request.device);
        Ok(Response::Approvals {
            requests: vec![row(id, request, name)],
        })
    }

    /// Answer another device's request (it must be waiting: not this
    /// device's, not answered, not expired). Answers this device gave to
    /// requests that are gone are deleted in the same transaction.
    pub(super) async fn answer_approval(
        &mut self,
        id: &str,
        approved: bool,
    ) -> Result<Response, AccountError> {
        let store_key = self.store_key(Store::Application)?.public();
        let me = self.own_udf()?;
        let (requests, answers) = self.approval_entries()?;
        let Some((request, digest)) = requests.get(id) else {
            return Err(AccountError::NotFound(format!(
                "no approval request {id} (withdrawn, or never made)"
            )));
        };
        if request.device == me {
            return Err(AccountError::Forbidden(
                "a device does not approve its own requests".into(),
            ));
        }
        if answers.contains_key(id) {
            return Err(AccountError::Input(format!("{id} is answered already")));
        }
        if request.expires_ms <= now_ms() {
            return Err(AccountError::Input(format!("{id} has expired")));
        }
        let answer_id = ApprovalAnswer::unique_id(id)
            .ok_or_else(|| AccountError::Input(format!("{id} is not an approval request")))?;
        let answer = ApprovalAnswer {
            request: id.to_owned(),
            digest: digest.clone(),
            device: me.clone(),
            approved,
        };
        let sign = &self.activation()?.sign;
        let mut entries = vec![self.entry(
            Store::Application,
            &answer_id,
            Event::New,
            ANSWER_MESSAGE_TYPE,
            Some(&answer),
            sign,
            &[store_key],
        )?];
        for (request_id, old) in &answers {
            if old.device == me
                && !requests.contains_key(request_id)
                && let Some(old_id) = ApprovalAnswer::unique_id(request_id)
            {
                entries.push(self.entry::<()>(
                    Store::Application,
                    &old_id,
                    Event::Delete,
                    ANSWER_MESSAGE_TYPE,
                    None,
                    sign,
                    &[],
                )?);
            }
        }
        self.transact(vec![(Store::Application, entries)], Vec::new())
            .await?;
        let said = if approved { "approved" } else { "denied" };
        Ok(Response::Lines {
            lines: vec![format!(
                "{said}: {} using {}",
                self.device_name(&request.device),
                request.key
            )],
        })
    }

    /// Delete this device's request `id` (it is answered, or no longer
    /// waited for). Nothing to do if it is gone.
    pub(super) async fn withdraw_approval(&mut self, id: &str) -> Result<Response, AccountError> {
        let me = self.own_udf()?;
        if !id.starts_with(&format!("{APPROVAL_PREFIX}{me}/"))
            || !self.live(Store::Application).contains_key(id)
        {
            return Ok(Response::Lines { lines: Vec::new() });
        }
        let entry = self.entry::<()>(
            Store::Application,
            id,
            Event::Delete,
            APPROVAL_MESSAGE_TYPE,
            None,
            &self.activation()?.sign,
            &[],
        )?;
        self.transact(vec![(Store::Application, vec![entry])], Vec::new())
            .await?;
        Ok(Response::Lines {
            lines: vec![format!("withdrew {id}")],
        })
    }

    /// Where this device's approvals stand.
    pub(super) fn approvals(&self) -> Result<Approvals, AccountError> {
        let me = self.own_udf()?;
        let (requests, answers) = self.approval_entries()?;
        let now = now_ms();
        let names = self.device_names();
        let mut out = Approvals::default();
        for (id, (request, digest)) in requests {
            let answer = answers.get(&id);
            if request.device == me {
                // An answer counts only for the request as written.
                if let Some(answer) = answer.filter(|a| a.digest == digest) {
                    out.answered.insert(id, answer.approved);
                }
            } else if answer.is_none() && request.expires_ms > now {
                let name = names.get(&request.device).cloned();
                let name = name.unwrap_or_else(|| request.device.clone());
                out.waiting.push(row(id, request, name));
            }
        }
        out.waiting.sort_by_key(|r| r.asked_ms);
        Ok(out)
    }

    /// Each device's name in the account, by UDF (the Device catalog
    /// opened once).
    fn device_names(&self) -> BTreeMap<String, String> {
        self.devices()
            .unwrap_or_default()
            .into_iter()
            .map(|(name, d)| (d.device_udf, name))
            .collect()
    }

    /// A device's name in the account (its UDF if it has none).
    fn device_name(&self, udf: &str) -> String {
        self.device_names()
            .remove(udf)
            .unwrap_or_else(|| udf.to_owned())
    }
}

fn row(id: String, request: ApprovalRequest, device: String) -> ApprovalRow {
    ApprovalRow {
        id,
        device,
        operation: request.operation,
        key: request.key,
        fingerprint: request.fingerprint,
        host: request.host,
        user: request.user,
        program: request.program,
        asked_ms: request.asked_ms,
        expires_ms: request.expires_ms,
    }
}
