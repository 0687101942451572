//! Shared by the benchmark programs: `docs/benchmarks.md` is written by more than one of them, each
//! owning a block between HTML comment markers that the others keep as it is.

/// The start and end markers of program `name`'s block.
fn markers(name: &str) -> (String, String) {
    (format!("<!-- {name}:start -->"), format!("<!-- {name}:end -->"))
}

/// The block of `name` in `doc` (markers included), if any.
pub fn block<'a>(doc: &'a str, name: &str) -> Option<&'a str> {
    let (start, end) = markers(name);
    let a = doc.find(&start)?;
    let b = a + doc[a..].find(&end)? + end.len();
    Some(&doc[a..b])
}

/// `doc` with the block of `name` replaced by `body` (appended when absent).
pub fn set_block(doc: &str, name: &str, body: &str) -> String {
    let (start, end) = markers(name);
    let new = format!("{start}\n{}\n{end}", body.trim_end());
    match block(doc, name) {
        Some(old) => doc.replacen(old, &new, 1),
        None => format!("{}\n\n{new}\n", doc.trim_end()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_replaced_or_appended() {
        let doc = "# Benchmarks\n\ntext\n";
        let one = set_block(doc, "recorder-bench", "## Recorder\n| a |");
        assert!(one.ends_with("<!-- recorder-bench:start -->\n## Recorder\n| a |\n<!-- recorder-bench:end -->\n"));
        let two = set_block(&one, "recorder-bench", "## Recorder\n| b |");
        assert!(two.contains("| b |") && !two.contains("| a |"));
        assert_eq!(two.matches("recorder-bench:start").count(), 1);
        assert_eq!(block(&two, "recorder-bench").unwrap().lines().count(), 4);
        assert_eq!(block(doc, "recorder-bench"), None);
    }
}
