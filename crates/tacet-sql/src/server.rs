//! The session over the PostgreSQL wire protocol, so psql, Grafana and BI
//! tools can connect.
//!
//! Both query protocols: simple (psql) and extended (Parse/Bind/Execute, as
//! pgx behind Grafana, JDBC, psycopg and asyncpg speak it), with `$1`-style
//! parameters and results in the text or binary format each client asks
//! for (see [`crate::encode`]).
//!
//! Read-only: DDL and DML are refused by DataFusion's SQL options before they
//! are planned. With a password configured, clients authenticate with it
//! (cleartext over the connection: serve on loopback or behind a TLS proxy);
//! the password is never logged. At most `max_connections` are served at
//! once; each runs on its own task, so a slow client stalls only itself.

use std::fmt::Debug;
use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::common::ScalarValue;
use datafusion::prelude::{DataFrame, SessionContext};
use futures::{Sink, stream};
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
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::encode;
use crate::session::{read_only, run_query};

/// How to serve.
#[derive(Clone)]
pub struct ServeOptions {
    pub password: Option<String>,
    pub max_connections: usize,
}

impl Debug for ServeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeOptions")
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

/// Answers queries from the DataFusion session.
pub struct QueryHandler {
    ctx: Arc<SessionContext>,
    parser: Arc<Parser>,
}

impl NoopStartupHandler for QueryHandler {}

pub(crate) fn user_error(message: String) -> PgWireError {
    // 42000: syntax error or access rule violation, the closest class for
    // planning errors and refused statements.
    PgWireError::UserError(Box::new(ErrorInfo::new("ERROR".into(), "42000".into(), message)))
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
        let batches = run_query(&self.ctx, query)
            .await
            .map_err(|e| user_error(e.to_string()))?;
        let schema = match batches.first() {
            Some(b) => b.schema(),
            None => self
                .ctx
                .sql_with_options(query, crate::session::read_only())
                .await
                .map(|df| Arc::new(df.schema().as_arrow().clone()))
                .map_err(|e| user_error(e.to_string()))?,
        };
        let fields = Arc::new(encode::fields(&schema, &encode::all_text()));
        let rows = encode::rows(&batches, &fields)?;
        Ok(vec![Response::Query(QueryResponse::new(fields, stream::iter(rows)))])
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
        let plan = self
            .ctx
            .sql_with_options(sql, read_only())
            .await
            .map_err(|e| user_error(e.to_string()))?;
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
        let schema = Arc::new(plan.schema().as_arrow().clone());
        let batches = plan.collect().await.map_err(|e| user_error(e.to_string()))?;
        let fields = Arc::new(encode::fields(&schema, &portal.result_column_format));
        let rows = encode::rows(&batches, &fields)?;
        Ok(Response::Query(QueryResponse::new(fields, stream::iter(rows))))
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

/// Binds `listen` and returns the address and a future that serves forever.
pub async fn bind(
    ctx: Arc<SessionContext>,
    listen: &str,
    opts: ServeOptions,
) -> std::io::Result<(SocketAddr, impl std::future::Future<Output = ()>)> {
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let handler = Arc::new(QueryHandler {
        parser: Arc::new(Parser { ctx: ctx.clone() }),
        ctx,
    });
    let permits = Arc::new(Semaphore::new(opts.max_connections.max(1)));
    let serve = async move {
        loop {
            let permit = permits
                .clone()
                .acquire_owned()
                .await
                .expect("semaphore is never closed");
            let (socket, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors or a connection reset before accept:
                    // the listener itself is fine, so back off and go on.
                    tracing::warn!(error = %e, "Could not accept an SQL connection; retrying.");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let handler = handler.clone();
            let password = opts.password.clone();
            tokio::spawn(async move {
                let result = match password {
                    Some(pw) => {
                        let startup = Arc::new(CleartextPasswordAuthStartupHandler::new(
                            FixedPassword(pw),
                            DefaultServerParameterProvider::default(),
                        ));
                        pgwire::tokio::process_socket(socket, None, Guarded { handler, startup }).await
                    }
                    None => pgwire::tokio::process_socket(socket, None, Open(handler)).await,
                };
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "SQL connection ended with an error.");
                }
                drop(permit);
            });
        }
    };
    Ok((addr, serve))
}
