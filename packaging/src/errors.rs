//! The one line a binary prints for a failed command: every error type's `Display` says its whole message
//! (including its cause's, so logs and reports built with `to_string()` are complete), and the edge walks the
//! cause chain adding only what the message so far does not already say. So no error line repeats a clause,
//! whichever way an error type was written.

use std::error::Error;

/// Joins an error chain (outermost first, as `anyhow::Error::chain` yields it) with ": ", leaving out each cause
/// whose text the link before it already contains.
pub fn error_line<'a>(chain: impl IntoIterator<Item = &'a (dyn Error + 'static)>) -> String {
    let mut line = String::new();
    let mut previous = String::new();
    for link in chain {
        let text = link.to_string();
        if line.is_empty() {
            line.push_str(&text);
        } else if !previous.contains(text.as_str()) {
            line.push_str(": ");
            line.push_str(&text);
        }
        // A skipped cause is said by its parent, so its own causes are compared against it, as said.
        previous = text;
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// An error with a message and an optional cause.
    #[derive(Debug)]
    struct E(String, Option<Box<E>>);

    impl std::fmt::Display for E {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(&self.0)
        }
    }

    impl Error for E {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            self.1.as_deref().map(|e| e as &(dyn Error + 'static))
        }
    }

    fn chain<'a>(e: &'a E) -> Vec<&'a (dyn Error + 'static)> {
        let first: &'a (dyn Error + 'static) = e;
        std::iter::successors(Some(first), |e: &&'a (dyn Error + 'static)| {
            let e: &'a (dyn Error + 'static) = *e;
            e.source()
        })
        .collect()
    }

    fn nest(messages: &[&str]) -> E {
        let mut e: Option<Box<E>> = None;
        for m in messages.iter().rev() {
            e = Some(Box::new(E(m.to_string(), e)));
        }
        *e.unwrap()
    }

    #[test]
    fn causes_said_by_their_parent_are_left_out() {
        let io = "No such file or directory (os error 2)";
        // A store error that says its io cause, under a context that does not.
        let e = nest(&["installing", &format!("opening /x/lock: {io}"), io]);
        assert_eq!(
            error_line(chain(&e)),
            format!("installing: opening /x/lock: {io}")
        );
        // A transparent wrapper adding a suffix, its cause saying the same, its cause's cause too.
        let e = nest(&[
            "corrupt env: bad CRC; nothing was changed",
            "corrupt env: bad CRC",
            "bad CRC",
        ]);
        assert_eq!(
            error_line(chain(&e)),
            "corrupt env: bad CRC; nothing was changed"
        );
        // Contexts that do not say their cause keep it.
        let e = nest(&["a", "b", "c"]);
        assert_eq!(error_line(chain(&e)), "a: b: c");
    }

    proptest! {
        /// Whatever the chain, each link's text appears in the line, and a chain whose links each say their
        /// cause prints exactly the outermost message.
        #[test]
        fn every_link_is_said_and_said_once(parts in prop::collection::vec("[a-z]{3,8}", 1..6)) {
            let plain: Vec<&str> = parts.iter().map(String::as_str).collect();
            let e = nest(&plain);
            let line = error_line(chain(&e));
            for p in &parts {
                prop_assert!(line.contains(p.as_str()));
            }
            // Each link says its cause: "p0: p1: ...", "p1: ...", ...
            let said: Vec<String> = (0..parts.len()).map(|i| parts[i..].join(": ")).collect();
            let said_refs: Vec<&str> = said.iter().map(String::as_str).collect();
            let e = nest(&said_refs);
            prop_assert_eq!(error_line(chain(&e)), parts.join(": "));
        }
    }
}
