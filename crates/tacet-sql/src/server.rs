//! The session over the PostgreSQL wire protocol, so psql, Grafana and BI
//! tools can connect.
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
use datafusion::arrow::array::Array;
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::prelude::SessionContext;
use futures::stream;
use pgwire::api::auth::cleartext::CleartextPasswordAuthStartupHandler;
use pgwire::api::auth::noop::NoopStartupHandler;
use pgwire::api::auth::{AuthSource, DefaultServerParameterProvider, LoginInfo, Password, StartupHandler};
use pgwire::api::query::SimpleQueryHandler;
use pgwire::api::results::{DataRowEncoder, FieldFormat, FieldInfo, QueryResponse, Response};
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, PgWireServerHandlers, Type};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::session::run_query;

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
}

impl NoopStartupHandler for QueryHandler {}

fn pg_type(t: &DataType) -> Type {
    match t {
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 => Type::INT8,
        DataType::UInt8 | DataType::UInt16 | DataType::UInt32 | DataType::UInt64 => Type::INT8,
        DataType::Float16 | DataType::Float32 | DataType::Float64 => Type::FLOAT8,
        DataType::Boolean => Type::BOOL,
        DataType::Timestamp(_, _) => Type::TIMESTAMP,
        DataType::Date32 | DataType::Date64 => Type::DATE,
        _ => Type::TEXT,
    }
}

fn user_error(message: String) -> PgWireError {
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
        let fields: Vec<FieldInfo> = schema
            .fields()
            .iter()
            .map(|f| FieldInfo::new(f.name().clone(), None, None, pg_type(f.data_type()), FieldFormat::Text))
            .collect();
        let fields = Arc::new(fields);
        let options = FormatOptions::default();
        let mut rows = Vec::new();
        for batch in &batches {
            let formatters = batch
                .columns()
                .iter()
                .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| user_error(e.to_string()))?;
            for row in 0..batch.num_rows() {
                let mut encoder = DataRowEncoder::new(fields.clone());
                for (col, f) in batch.columns().iter().zip(&formatters) {
                    let value = (!col.is_null(row)).then(|| f.value(row).to_string());
                    encoder.encode_field(&value)?;
                }
                rows.push(Ok(encoder.take_row()));
            }
        }
        Ok(vec![Response::Query(QueryResponse::new(fields, stream::iter(rows)))])
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
    let handler = Arc::new(QueryHandler { ctx });
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
