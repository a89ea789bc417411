//! Every query of docs/sql.md runs against the golden scenarios' outcomes and
//! must print exactly the table that follows it there. After a deliberate
//! change: `TACET_BLESS=1 cargo test --release -p tacet-sql --test cookbook`,
//! then read the diff of docs/sql.md.

mod common;

use datafusion::arrow::util::pretty::pretty_format_batches;

/// (query, expected table or None) in document order, and where each expected block sits.
fn recipes(doc: &str) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    let mut lines = doc.lines().peekable();
    while let Some(line) = lines.next() {
        if line.trim() != "```sql" {
            continue;
        }
        let mut query = String::new();
        for l in lines.by_ref() {
            if l.trim() == "```" {
                break;
            }
            query.push_str(l);
            query.push('\n');
        }
        while lines.peek().is_some_and(|l| l.trim().is_empty()) {
            lines.next();
        }
        let mut expected = None;
        if lines.peek().is_some_and(|l| l.trim() == "```text") {
            lines.next();
            let mut table = String::new();
            for l in lines.by_ref() {
                if l.trim() == "```" {
                    break;
                }
                table.push_str(l);
                table.push('\n');
            }
            expected = Some(table);
        }
        out.push((query, expected));
    }
    out
}

/// The document with every query followed by `tables[i]`.
fn blessed(doc: &str, tables: &[String]) -> String {
    let mut out = String::new();
    let mut lines = doc.lines().peekable();
    let mut i = 0;
    while let Some(line) = lines.next() {
        out.push_str(line);
        out.push('\n');
        if line.trim() != "```sql" {
            continue;
        }
        for l in lines.by_ref() {
            out.push_str(l);
            out.push('\n');
            if l.trim() == "```" {
                break;
            }
        }
        // Drop an old expected block.
        let mut blank = 0;
        while lines.peek().is_some_and(|l| l.trim().is_empty()) {
            lines.next();
            blank += 1;
        }
        if lines.peek().is_some_and(|l| l.trim() == "```text") {
            lines.next();
            for l in lines.by_ref() {
                if l.trim() == "```" {
                    break;
                }
            }
            while lines.peek().is_some_and(|l| l.trim().is_empty()) {
                lines.next();
            }
            blank = 1;
        }
        out.push_str("\n```text\n");
        out.push_str(&tables[i]);
        out.push_str("```\n");
        if blank > 0 && lines.peek().is_some() {
            out.push('\n');
        }
        i += 1;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_cookbook_query_gives_its_documented_table() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::scenario_outcomes(dir.path());
    let ctx = tacet_sql::open(dir.path(), Some(&config)).await.unwrap();
    let doc_path = common::repo("docs/sql.md");
    let doc = std::fs::read_to_string(&doc_path).unwrap();
    let recipes = recipes(&doc);
    assert!(recipes.len() >= 10, "{} recipes", recipes.len());
    let mut tables = Vec::new();
    let mut failures = Vec::new();
    for (query, expected) in &recipes {
        let batches = tacet_sql::run_query(&ctx, query)
            .await
            .unwrap_or_else(|e| panic!("{e}\n{query}"));
        let table = format!("{}\n", pretty_format_batches(&batches).unwrap());
        if expected.as_deref() != Some(table.as_str()) {
            failures.push(format!(
                "{query}\nexpected:\n{}\ngot:\n{table}",
                expected.as_deref().unwrap_or("(none)")
            ));
        }
        tables.push(table);
    }
    if std::env::var("TACET_BLESS").is_ok_and(|v| v == "1") {
        std::fs::write(&doc_path, blessed(&doc, &tables)).unwrap();
        return;
    }
    assert!(
        failures.is_empty(),
        "cookbook differs (TACET_BLESS=1 to accept):\n{}",
        failures.join("\n")
    );
}
