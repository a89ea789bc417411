//! `tacet sql` and `tacet serve-sql`.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use tacet_core::Config;
use tacet_sql::format::{Format, render};
use tacet_sql::session::SessionContext;

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

fn load(config: Option<&Path>) -> Result<Option<Config>> {
    config.map(Config::from_file).transpose().map_err(Into::into)
}

/// One query, or the interactive prompt when `query` is `None`.
pub fn sql(data: &Path, config: Option<&Path>, query: Option<&str>, format: Format) -> Result<()> {
    let config = load(config)?;
    let rt = runtime()?;
    rt.block_on(async {
        let ctx = tacet_sql::open(data, config.as_ref()).await?;
        match query {
            Some(q) => {
                let batches = tacet_sql::run_query(&ctx, q).await?;
                print!("{}", render(&batches, format)?);
                Ok(())
            }
            None => repl(&ctx, format).await,
        }
    })
}

const HELP: &str = "\\d          list tables and views
\\d NAME     describe a table or view
\\q          quit
Statements end with ';'. Try: SELECT * FROM journey_sli;";

async fn repl(ctx: &SessionContext, format: Format) -> Result<()> {
    let mut editor = rustyline::DefaultEditor::new()?;
    let history = std::env::var_os("HOME").map(|h| Path::new(&h).join(".tacet_sql_history"));
    if let Some(h) = &history {
        let _ = editor.load_history(h);
    }
    println!(
        "tacet sql: outcomes, journey_sli, outcomes_per_minute, journey_missing_steps, journey_last_services. \\? for help."
    );
    let mut buffer = String::new();
    loop {
        let prompt = if buffer.is_empty() { "tacet> " } else { "   ..> " };
        let line = match editor.readline(prompt) {
            Ok(l) => l,
            Err(rustyline::error::ReadlineError::Interrupted) => {
                buffer.clear();
                continue;
            }
            Err(rustyline::error::ReadlineError::Eof) => break,
            Err(e) => return Err(e.into()),
        };
        let trimmed = line.trim();
        if buffer.is_empty() && trimmed.starts_with('\\') {
            let _ = editor.add_history_entry(trimmed);
            let statement = match trimmed.split_whitespace().collect::<Vec<_>>().as_slice() {
                ["\\q"] => break,
                ["\\?"] | ["\\h"] => {
                    println!("{HELP}");
                    continue;
                }
                ["\\d"] => "SELECT table_name, table_type FROM information_schema.tables \
                            WHERE table_schema = 'public' ORDER BY table_name"
                    .to_owned(),
                ["\\d", name] => format!(
                    "SELECT column_name, data_type, is_nullable FROM information_schema.columns \
                     WHERE table_name = '{}' ORDER BY ordinal_position",
                    name.replace('\'', "''")
                ),
                _ => {
                    println!("unknown command; \\? for help");
                    continue;
                }
            };
            show(ctx, &statement, Format::Table).await;
            continue;
        }
        buffer.push_str(&line);
        buffer.push('\n');
        if trimmed.ends_with(';') {
            let statement = std::mem::take(&mut buffer);
            let _ = editor.add_history_entry(statement.trim());
            show(ctx, &statement, format).await;
        }
    }
    if let Some(h) = &history {
        let _ = editor.save_history(h);
    }
    Ok(())
}

/// Runs and prints; an error is printed as DataFusion words it (it names the
/// part of the SQL at fault) and the prompt goes on.
async fn show(ctx: &SessionContext, statement: &str, format: Format) {
    match tacet_sql::run_query(ctx, statement).await {
        Ok(batches) => match render(&batches, format) {
            Ok(text) => print!("{text}"),
            Err(e) => eprintln!("error: {e}"),
        },
        Err(e) => eprintln!("error: {e}"),
    }
}

/// Serves the session over the PostgreSQL wire protocol until interrupted.
pub fn serve(data: &Path, config: Option<&Path>, listen: &str, password_env: Option<&str>) -> Result<()> {
    let config = load(config)?;
    let sql = config.as_ref().map(|c| c.sql.clone()).unwrap_or_default();
    let password = match password_env.or(sql.password_env.as_deref()) {
        Some(var) => Some(std::env::var(var).with_context(|| format!("the password variable {var} is not set"))?),
        None => sql.password.as_ref().map(|p| p.0.clone()),
    };
    let rt = runtime()?;
    rt.block_on(async {
        let ctx = Arc::new(tacet_sql::open(data, config.as_ref()).await?);
        let opts = tacet_sql::server::ServeOptions::from_config(&sql, password.clone());
        let (addr, serve) = tacet_sql::server::bind(ctx, listen, opts).await?;
        eprintln!(
            "Serving {} over the PostgreSQL protocol on {addr} ({}, read-only). Try: psql -h {} -p {} -c 'SELECT * FROM journey_sli'",
            data.display(),
            match (password.is_some(), sql.tls_cert.is_some()) {
                (true, true) => "password required, TLS offered",
                (true, false) => "password required",
                (false, true) => "no password, TLS offered",
                (false, false) => "no password",
            },
            addr.ip(),
            addr.port()
        );
        tokio::select! {
            () = serve => {}
            _ = tokio::signal::ctrl_c() => eprintln!("Stopping."),
        }
        Ok(())
    })
}
