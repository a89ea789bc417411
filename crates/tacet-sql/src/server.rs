//! The session over the PostgreSQL wire protocol, so psql, Grafana and BI
//! tools can connect.
//!
//! Both query protocols: simple (psql) and extended (Parse/Bind/Execute, as
//! pgx behind Grafana, JDBC, psycopg and asyncpg speak it), with `$1`-style
//! parameters and results in the text or binary format each client asks
//! for (see [`crate::encode`]).
//!
//! Clients are untrusted, so every resource a client can ask for is bounded:
//! - read-only: DDL, DML and statements such as `SET` are refused by
//!   DataFusion's SQL options before they are planned;
//! - each connection has a session of its own, over the shared tables, with
//!   its own memory pool (`[sql] query_memory`, no spilling to disk): a
//!   query that needs more fails with a resources-exhausted error;
//! - results are streamed to the client batch by batch, never collected,
//!   and a statement that runs past `[sql] statement_timeout` is stopped;
//! - connections are counted after accept (at most `max_connections`, the
//!   rest are closed at once), queries run at most `max_concurrent_queries`
//!   at a time, and a connection idle for `idle_timeout` is closed, so idle
//!   sockets cannot lock others out;
//! - off loopback a password is required; it is compared in constant time
//!   and never logged. With `[sql] tls_cert` and `tls_key` clients may ask
//!   for TLS (psql `sslmode=require`), so the password does not cross the
//!   network in the clear.

use std::collections::VecDeque;
use std::fmt::Debug;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use datafusion::common::ScalarValue;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::prelude::{DataFrame, SessionContext};
use futures::{Sink, Stream, StreamExt, stream};
use pgwire::api::auth::cleartext::CleartextPasswordAuthStartupHandler;
use pgwire::api::auth::noop::NoopStartupHandler;
use pgwire::api::auth::{AuthSource, DefaultServerParameterProvider, LoginInfo, Password, StartupHandler};
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{FieldInfo, QueryResponse, Response};
use pgwire::api::stmt::QueryParser;
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, PgWireServerHandlers, Type};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::data::DataRow;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::encode;
use crate::session::read_only;

/// How to serve: the limits a client cannot talk past.
#[derive(Clone)]
pub struct ServeOptions {
    pub password: Option<String>,
    /// Connections open at once; more are closed as soon as accepted.
    pub max_connections: usize,
    /// Queries running at once over all connections; more wait their turn.
    pub max_concurrent_queries: usize,
    /// Longest a statement may plan and run, its results sent included.
    pub statement_timeout: Duration,
    /// A connection without a query for this long is closed.
    pub idle_timeout: Duration,
    /// Memory a connection's query may hold (sorts, joins, aggregates).
    pub query_memory: usize,
    /// Certificate chain and key (PEM files) for TLS, when configured.
    pub tls: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

impl ServeOptions {
    /// The `[sql]` settings, with `password` given separately (it may come
    /// from an environment variable).
    pub fn from_config(sql: &tacet_core::config::SqlConfig, password: Option<String>) -> Self {
        Self {
            password,
            max_connections: sql.max_connections,
            max_concurrent_queries: sql.max_concurrent_queries,
            statement_timeout: sql.statement_timeout,
            idle_timeout: sql.idle_timeout,
            query_memory: sql.query_memory_bytes,
            tls: sql.tls_cert.clone().zip(sql.tls_key.clone()),
        }
    }
}

impl Debug for ServeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeOptions")
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("max_connections", &self.max_connections)
            .field("max_concurrent_queries", &self.max_concurrent_queries)
            .field("statement_timeout", &self.statement_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("query_memory", &self.query_memory)
            .field("tls", &self.tls)
            .finish()
    }
}

/// What one connection shares with the server: the query permits, the
/// statement timeout, and when it last did something (for the idle timeout).
struct Connection {
    queries: Arc<Semaphore>,
    statement_timeout: Duration,
    opened: Instant,
    /// Milliseconds after `opened` of the last query activity.
    last_active_ms: AtomicU64,
}

impl Connection {
    fn touch(&self) {
        let ms = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_active_ms.fetch_max(ms, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        self.opened
            .elapsed()
            .saturating_sub(Duration::from_millis(self.last_active_ms.load(Ordering::Relaxed)))
    }

    /// A query permit, waited for no longer than the statement may run.
    async fn permit(&self, deadline: Instant) -> PgWireResult<OwnedSemaphorePermit> {
        match tokio::time::timeout_at(deadline, self.queries.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_)) => Err(user_error("the server is shutting down".into())),
            Err(_) => Err(timeout_error(self.statement_timeout)),
        }
    }
}

/// Answers one connection's queries from its own DataFusion session.
pub struct QueryHandler {
    ctx: Arc<SessionContext>,
    parser: Arc<Parser>,
    connection: Arc<Connection>,
}

impl NoopStartupHandler for QueryHandler {}

pub(crate) fn user_error(message: String) -> PgWireError {
    // 42000: syntax error or access rule violation, the closest class for
    // planning errors and refused statements.
    PgWireError::UserError(Box::new(ErrorInfo::new("ERROR".into(), "42000".into(), message)))
}

fn timeout_error(limit: Duration) -> PgWireError {
    // 57014: query_canceled, what PostgreSQL reports for statement_timeout.
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".into(),
        "57014".into(),
        format!(
            "canceling statement due to statement timeout ([sql] statement_timeout = {})",
            humantime::format_duration(limit)
        ),
    )))
}

/// Runs `plan` and streams its rows, encoded batch by batch as the client
/// reads them, until the deadline: then the stream ends with a timeout
/// error. The query permit is held until the stream is dropped.
async fn stream_rows(
    plan: DataFrame,
    fields: Arc<Vec<FieldInfo>>,
    connection: Arc<Connection>,
    deadline: Instant,
) -> PgWireResult<impl Stream<Item = PgWireResult<DataRow>> + Send + 'static> {
    let permit = connection.permit(deadline).await?;
    let limit = connection.statement_timeout;
    let batches = match tokio::time::timeout_at(deadline, plan.execute_stream()).await {
        Ok(started) => started.map_err(|e| user_error(e.to_string()))?,
        Err(_) => return Err(timeout_error(limit)),
    };
    struct Rows {
        batches: SendableRecordBatchStream,
        pending: VecDeque<PgWireResult<DataRow>>,
        fields: Arc<Vec<FieldInfo>>,
        connection: Arc<Connection>,
        done: bool,
        _permit: OwnedSemaphorePermit,
    }
    let rows = Rows {
        batches,
        pending: VecDeque::new(),
        fields,
        connection,
        done: false,
        _permit: permit,
    };
    Ok(stream::unfold(rows, move |mut rows| async move {
        loop {
            if let Some(row) = rows.pending.pop_front() {
                return Some((row, rows));
            }
            if rows.done {
                return None;
            }
            rows.connection.touch();
            // Checked before each batch as well: `timeout_at` polls the
            // stream first, and a stream whose batches are always ready
            // (`range(1e10)`) would never see its deadline.
            let next = if Instant::now() >= deadline {
                None
            } else {
                tokio::time::timeout_at(deadline, rows.batches.next()).await.ok()
            };
            let failure = match next {
                Some(None) => return None,
                Some(Some(Ok(batch))) => match encode::rows(std::slice::from_ref(&batch), &rows.fields) {
                    Ok(encoded) => {
                        rows.pending.extend(encoded);
                        continue;
                    }
                    Err(e) => e,
                },
                Some(Some(Err(e))) => user_error(e.to_string()),
                None => timeout_error(limit),
            };
            rows.done = true;
            return Some((Err(failure), rows));
        }
    }))
}

impl QueryHandler {
    /// Plans `sql` read-only, within the statement's deadline.
    async fn plan(&self, sql: &str, deadline: Instant) -> PgWireResult<DataFrame> {
        self.connection.touch();
        match tokio::time::timeout_at(deadline, self.ctx.sql_with_options(sql, read_only())).await {
            Ok(planned) => planned.map_err(|e| user_error(e.to_string())),
            Err(_) => Err(timeout_error(self.connection.statement_timeout)),
        }
    }

    fn deadline(&self) -> Instant {
        Instant::now() + self.connection.statement_timeout
    }
}

#[async_trait]
impl SimpleQueryHandler for QueryHandler {
    async fn do_query<C>(&self, _client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
    {
        if query.trim().trim_end_matches(';').trim().is_empty() {
            return Ok(vec![Response::EmptyQuery]);
        }
        let deadline = self.deadline();
        let plan = self.plan(query, deadline).await?;
        let fields = Arc::new(encode::fields(plan.schema().as_arrow(), &encode::all_text()));
        let rows = stream_rows(plan, fields.clone(), self.connection.clone(), deadline).await?;
        Ok(vec![Response::Query(QueryResponse::new(fields, rows))])
    }
}

/// A statement of the extended protocol, planned at Parse: the plan (with
/// its `$n` placeholders), the parameter types DataFusion inferred, and the
/// result schema a Describe reports.
#[derive(Clone, Debug)]
pub struct Planned {
    plan: DataFrame,
    /// Per `$n` (index n-1): the type DataFusion inferred, if any.
    params: Vec<Option<datafusion::arrow::datatypes::DataType>>,
}

/// Plans statements of the extended protocol (read-only, as the simple one).
pub struct Parser {
    ctx: Arc<SessionContext>,
    connection: Arc<Connection>,
}

impl Debug for Parser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Parser")
    }
}

#[async_trait]
impl QueryParser for Parser {
    type Statement = Planned;

    async fn parse_sql<C>(&self, _client: &C, sql: &str, _types: &[Option<Type>]) -> PgWireResult<Option<Planned>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        self.connection.touch();
        let limit = self.connection.statement_timeout;
        let plan = match tokio::time::timeout(limit, self.ctx.sql_with_options(sql, read_only())).await {
            Ok(planned) => planned.map_err(|e| user_error(e.to_string()))?,
            Err(_) => return Err(timeout_error(limit)),
        };
        let mut inferred: Vec<(usize, Option<datafusion::arrow::datatypes::DataType>)> = plan
            .logical_plan()
            .get_parameter_types()
            .map_err(|e| user_error(e.to_string()))?
            .into_iter()
            .filter_map(|(name, t)| Some((name.strip_prefix('$')?.parse::<usize>().ok()?, t)))
            .collect();
        inferred.sort_by_key(|(n, _)| *n);
        let count = inferred.last().map_or(0, |(n, _)| *n);
        let mut params = vec![None; count];
        for (n, t) in inferred {
            if n >= 1 {
                params[n - 1] = t;
            }
        }
        Ok(Some(Planned { plan, params }))
    }

    fn get_parameter_types(&self, stmt: &Planned) -> PgWireResult<Vec<Type>> {
        Ok(stmt
            .params
            .iter()
            .map(|t| t.as_ref().map_or(Type::UNKNOWN, encode::pg_type))
            .collect())
    }

    fn get_result_schema(&self, stmt: &Planned, format: Option<&Format>) -> PgWireResult<Vec<FieldInfo>> {
        Ok(encode::fields(
            stmt.plan.schema().as_arrow(),
            format.unwrap_or(&Format::UnifiedText),
        ))
    }
}

/// Parameter `i` of `portal` as a DataFusion value, read as `ty` says.
fn parameter(portal: &Portal<Planned>, i: usize, ty: &Type) -> PgWireResult<ScalarValue> {
    Ok(match *ty {
        Type::INT2 => ScalarValue::Int16(portal.parameter::<i16>(i, ty)?),
        Type::INT4 => ScalarValue::Int32(portal.parameter::<i32>(i, ty)?),
        Type::INT8 => ScalarValue::Int64(portal.parameter::<i64>(i, ty)?),
        Type::FLOAT4 => ScalarValue::Float32(portal.parameter::<f32>(i, ty)?),
        Type::FLOAT8 => ScalarValue::Float64(portal.parameter::<f64>(i, ty)?),
        Type::BOOL => ScalarValue::Boolean(portal.parameter::<bool>(i, ty)?),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
            ScalarValue::Utf8(portal.parameter::<String>(i, ty)?)
        }
        // Times and anything else: accepted in text format and cast by the
        // plan to the type it expects.
        // (format codes were checked against the parameters in do_query)
        _ if !portal.parameter_format.is_binary(i) => ScalarValue::Utf8(portal.parameter::<String>(i, &Type::TEXT)?),
        _ => {
            return Err(user_error(format!(
                "parameter ${} of type {} in binary format is not supported; send it as text",
                i + 1,
                ty.name()
            )));
        }
    })
}

#[async_trait]
impl ExtendedQueryHandler for QueryHandler {
    type Statement = Planned;
    type QueryParser = Parser;

    fn query_parser(&self) -> Arc<Parser> {
        self.parser.clone()
    }

    async fn do_query<C>(&self, _client: &mut C, portal: &Portal<Planned>, _max_rows: usize) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let stored = &portal.statement;
        let planned = &stored.statement;
        // pgwire indexes format codes unchecked: a malformed Bind is an error here, not a panic.
        encode::check_codes(&portal.parameter_format, portal.parameter_len(), "parameter").map_err(user_error)?;
        encode::check_codes(
            &portal.result_column_format,
            planned.plan.schema().fields().len(),
            "result column",
        )
        .map_err(user_error)?;
        let mut values = Vec::with_capacity(portal.parameter_len());
        for i in 0..portal.parameter_len() {
            let inferred = planned.params.get(i).cloned().flatten();
            let ty = stored
                .parameter_types
                .get(i)
                .cloned()
                .flatten()
                .filter(|t| *t != Type::UNKNOWN)
                .or_else(|| inferred.as_ref().map(encode::pg_type))
                .unwrap_or(Type::UNKNOWN);
            let mut value = parameter(portal, i, &ty)?;
            if let Some(t) = &inferred {
                value = value
                    .cast_to(t)
                    .map_err(|e| user_error(format!("parameter ${}: {e}", i + 1)))?;
            }
            values.push(value);
        }
        let mut plan = planned.plan.clone();
        if !values.is_empty() {
            plan = plan.with_param_values(values).map_err(|e| user_error(e.to_string()))?;
        }
        let fields = Arc::new(encode::fields(plan.schema().as_arrow(), &portal.result_column_format));
        let rows = stream_rows(plan, fields.clone(), self.connection.clone(), self.deadline()).await?;
        Ok(Response::Query(QueryResponse::new(fields, rows)))
    }
}

/// The configured password.
#[derive(Debug)]
struct FixedPassword(String);

#[async_trait]
impl AuthSource for FixedPassword {
    async fn get_password(&self, _login: &LoginInfo) -> PgWireResult<Password> {
        Ok(Password::new(None, self.0.as_bytes().to_vec()))
    }

    /// Compared in constant time: how long a wrong guess takes says
    /// nothing about how much of it was right.
    async fn verify_password(&self, login: &LoginInfo, presented: &[u8]) -> PgWireResult<Option<()>> {
        if constant_time_eq(self.0.as_bytes(), presented) {
            Ok(None)
        } else {
            Err(PgWireError::InvalidPassword(
                login.user().unwrap_or_default().to_owned(),
            ))
        }
    }
}

/// Equality of two byte strings in time that depends only on their
/// lengths: both are hashed, and the digests compared without an early exit.
fn constant_time_eq(expected: &[u8], presented: &[u8]) -> bool {
    use sha2::{Digest, Sha256};
    let (a, b) = (Sha256::digest(expected), Sha256::digest(presented));
    a.iter().zip(b.iter()).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

impl Debug for QueryHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("QueryHandler")
    }
}

struct Open(Arc<QueryHandler>);

impl PgWireServerHandlers for Open {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.0.clone()
    }
    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.0.clone()
    }
    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        self.0.clone()
    }
}

struct Guarded {
    handler: Arc<QueryHandler>,
    startup: Arc<CleartextPasswordAuthStartupHandler<FixedPassword, DefaultServerParameterProvider>>,
}

impl PgWireServerHandlers for Guarded {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.handler.clone()
    }
    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.handler.clone()
    }
    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        self.startup.clone()
    }
}

/// Why the server cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {listen}: {cause}")]
    Listen { listen: String, cause: std::io::Error },
    #[error(
        "{addr} is not a loopback address: serving SQL beyond this machine needs a password ([sql] password_env, or --password-env)"
    )]
    PasswordRequired { addr: SocketAddr },
    #[error("cannot set up a query session: {0}")]
    Session(String),
    #[error("TLS ([sql] tls_cert, tls_key): {0}")]
    Tls(String),
}

/// A TLS acceptor for the PEM certificate chain and key files.
fn tls_acceptor(cert: &std::path::Path, key: &std::path::Path) -> Result<pgwire::tokio::TlsAcceptor, ServeError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    use tokio_rustls::rustls;
    let fail = |what: &std::path::Path, e: &dyn std::fmt::Display| ServeError::Tls(format!("{}: {e}", what.display()));
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| fail(cert, &e))?;
    if certs.is_empty() {
        return Err(fail(cert, &"no certificate in the file"));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| fail(key, &e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ServeError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|e| ServeError::Tls(e.to_string()))?;
    Ok(pgwire::tokio::TlsAcceptor::from(Arc::new(config)))
}

/// A session of its own for one connection, over the shared tables and
/// views of `base`, with a memory pool of `query_memory` bytes and no
/// spilling to disk.
fn connection_session(base: &SessionContext, query_memory: usize) -> Result<SessionContext, ServeError> {
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_limit(query_memory, 1.0)
        .with_disk_manager_builder(DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled))
        .build_arc()
        .map_err(|e| ServeError::Session(e.to_string()))?;
    let state = SessionStateBuilder::new_from_existing(base.state())
        .with_runtime_env(runtime)
        .build();
    Ok(SessionContext::new_with_state(state))
}

/// One open connection, counted until dropped. Dropped by a panic too:
/// pgwire's message decoding can panic on a malformed message (a `Parse`
/// shorter than its fields, found by fuzzing pgwire 0.42.1); tokio ends only
/// that connection's task, and its slot must come back with it.
struct OpenConnection(Arc<AtomicUsize>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Resolves when `connection` has had no query activity for `limit`.
async fn idle(connection: &Connection, limit: Duration) {
    loop {
        let idle_for = connection.idle_for();
        if idle_for >= limit {
            return;
        }
        tokio::time::sleep(limit - idle_for).await;
    }
}

/// Binds `listen` and returns the address and a future that serves until dropped.
pub async fn bind(
    ctx: Arc<SessionContext>,
    listen: &str,
    opts: ServeOptions,
) -> Result<(SocketAddr, impl std::future::Future<Output = ()>), ServeError> {
    let failed = |cause| ServeError::Listen {
        listen: listen.to_owned(),
        cause,
    };
    // Refused before anything listens beyond this machine without a password.
    if opts.password.is_none() {
        let addrs = tokio::net::lookup_host(listen).await.map_err(failed)?;
        if let Some(addr) = addrs.into_iter().find(|a| !a.ip().is_loopback()) {
            return Err(ServeError::PasswordRequired { addr });
        }
    }
    let listener = TcpListener::bind(listen).await.map_err(failed)?;
    let addr = listener.local_addr().map_err(failed)?;
    // Checked once here, so that a connection never fails for it later.
    connection_session(&ctx, opts.query_memory)?;
    let tls = match &opts.tls {
        Some((cert, key)) => Some(tls_acceptor(cert, key)?),
        None => None,
    };
    let queries = Arc::new(Semaphore::new(opts.max_concurrent_queries.max(1)));
    let open = Arc::new(AtomicUsize::new(0));
    let serve = async move {
        loop {
            let (socket, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors or a connection reset before accept:
                    // the listener itself is fine, so back off and go on.
                    tracing::warn!(error = %e, "Could not accept an SQL connection; retrying.");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let full = open.fetch_add(1, Ordering::SeqCst) >= opts.max_connections.max(1);
            let slot = OpenConnection(open.clone());
            if full {
                tracing::warn!(%peer, max_connections = opts.max_connections, "Refused an SQL connection: too many open.");
                continue;
            }
            let ctx = match connection_session(&ctx, opts.query_memory) {
                Ok(session) => Arc::new(session),
                Err(e) => {
                    tracing::error!(%peer, error = %e, "Refused an SQL connection: no session for it.");
                    continue;
                }
            };
            let connection = Arc::new(Connection {
                queries: queries.clone(),
                statement_timeout: opts.statement_timeout,
                opened: Instant::now(),
                last_active_ms: AtomicU64::new(0),
            });
            let handler = Arc::new(QueryHandler {
                parser: Arc::new(Parser {
                    ctx: ctx.clone(),
                    connection: connection.clone(),
                }),
                ctx,
                connection: connection.clone(),
            });
            let password = opts.password.clone();
            let idle_timeout = opts.idle_timeout;
            let tls = tls.clone();
            tokio::spawn(async move {
                let _slot = slot;
                let session = async {
                    match password {
                        Some(pw) => {
                            let startup = Arc::new(CleartextPasswordAuthStartupHandler::new(
                                FixedPassword(pw),
                                DefaultServerParameterProvider::default(),
                            ));
                            pgwire::tokio::process_socket(socket, tls, Guarded { handler, startup }).await
                        }
                        None => pgwire::tokio::process_socket(socket, tls, Open(handler)).await,
                    }
                };
                tokio::select! {
                    result = session => {
                        if let Err(e) = result {
                            tracing::debug!(%peer, error = %e, "SQL connection ended with an error.");
                        }
                    }
                    () = idle(&connection, idle_timeout) => {
                        tracing::info!(%peer, ?idle_timeout, "Closed an idle SQL connection.");
                    }
                }
            });
        }
    };
    Ok((addr, serve))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_compare_by_value_only() {
        assert!(constant_time_eq(b"hunter2", b"hunter2"));
        assert!(!constant_time_eq(b"hunter2", b"hunter3"));
        assert!(!constant_time_eq(b"hunter2", b"hunter"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(constant_time_eq(b"", b""));
    }
}
