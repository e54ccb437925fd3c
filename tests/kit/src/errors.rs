//! Checks on what a failing command printed: each error line says each thing once.

/// The first clause (a part of a line between ": " or "; ") of at least 10 characters that appears twice in one
/// line of `output`, e.g. `opening x: No such file (os error 2): No such file (os error 2)`.
pub fn repeated_clause(output: &str) -> Option<String> {
    for line in output.lines() {
        let clauses: Vec<&str> = line
            .split([':', ';'])
            .map(str::trim)
            .filter(|c| c.len() >= 10)
            .collect();
        for (i, c) in clauses.iter().enumerate() {
            if clauses[i + 1..].contains(c) {
                return Some((*c).to_string());
            }
        }
    }
    None
}

/// Panics naming the repeated clause if any line of `output` says one twice.
pub fn assert_said_once(output: &str) {
    if let Some(clause) = repeated_clause(output) {
        panic!("an error line repeats {clause:?}:\n{output}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_repeats_within_a_line_only() {
        let io = "No such file or directory (os error 2)";
        assert_eq!(
            repeated_clause(&format!("ota-client: error: opening /x/lock: {io}: {io}")),
            Some(io.to_string())
        );
        assert_eq!(
            repeated_clause("corrupt GRUB environment /g: bad header; nothing was changed: corrupt GRUB environment /g: bad header"),
            Some("corrupt GRUB environment /g".to_string())
        );
        assert_eq!(
            repeated_clause(&format!("opening /x: {io}\nreading /y: {io}")),
            None
        );
        assert_eq!(
            repeated_clause("ota-bundle: error: b.otab: error: short"),
            None
        );
    }
}
