//! Marked blocks in the user's own configuration files (`~/.profile`,
//! gpg.conf): what `mesh setup` and meshd add there, recognisably, so it
//! can be found again, left alone when already there, and taken out by
//! `mesh setup --undo` with the rest of the file untouched.

/// The line that opens a block.
pub const BEGIN: &str = "# >>> mesh >>>";
/// The line that closes a block.
pub const END: &str = "# <<< mesh <<<";

/// A block holding `lines`.
pub fn block(lines: &[&str]) -> String {
    let mut out = String::from(BEGIN);
    out.push('\n');
    for line in lines {
        out.push_str(line);
        out.push('\n');
    }
    out.push_str(END);
    out.push('\n');
    out
}

/// The gpg.conf block that makes gpg start `shim` (mesh-gpg-agent) as
/// its agent: meshd writes it when it first holds OpenPGP keys, `mesh
/// setup` when it sets the user up; both write the same bytes.
pub fn gpg_agent_program(shim: &str) -> String {
    block(&[
        "# gpg starts meshd, never the real gpg-agent (mesh setup --undo removes this)",
        &format!("agent-program {shim}"),
    ])
}

/// `text` with `block` appended (after a newline if it lacks one), or
/// `None` if the very same block is there already.
pub fn add_block(text: &str, block: &str) -> Option<String> {
    if text.contains(block) {
        return None;
    }
    let base = remove_block(text).unwrap_or_else(|| text.to_owned());
    let mut out = base;
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(block);
    Some(out)
}

/// `text` without its block, or `None` if it has none. The lines around
/// it are kept byte for byte.
pub fn remove_block(text: &str) -> Option<String> {
    let start = text.find(BEGIN)?;
    let end_at = text.get(start..)?.find(END)? + start + END.len();
    let end = match text.get(end_at..end_at + 1) {
        Some("\n") => end_at + 1,
        _ => end_at,
    };
    let mut out = String::with_capacity(text.len());
    out.push_str(text.get(..start)?);
    out.push_str(text.get(end..)?);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_come_and_go_leaving_the_rest_alone() {
        let original = "export EDITOR=vi\n# my own comment";
        let ours = block(&["export SSH_AUTH_SOCK=/run/user/1/mesh/ssh-agent.sock"]);
        let added = add_block(original, &ours).expect("added");
        assert!(added.starts_with("export EDITOR=vi\n# my own comment\n# >>> mesh >>>\n"));
        assert_eq!(
            add_block(&added, &ours),
            None,
            "the same block twice changes nothing"
        );
        let undone = remove_block(&added).expect("removed");
        assert_eq!(undone, "export EDITOR=vi\n# my own comment\n");
        assert_eq!(remove_block(original), None);
        // A changed block replaces the old one.
        let newer = block(&["export SSH_AUTH_SOCK=/elsewhere"]);
        let replaced = add_block(&added, &newer).expect("replaced");
        assert_eq!(replaced.matches(BEGIN).count(), 1);
        assert!(replaced.contains("/elsewhere"));
        assert_eq!(add_block("", &ours).as_deref(), Some(ours.as_str()));
    }
}
