//! Serving a `wasi:http/proxy` component: the host is the HTTP server, the guest handles one
//! request per instance.
//!
//! - One [`ProxyPre`] is made at Create (linking is checked there); each request gets a fresh
//!   `Store` and instance, so no state survives from one request to the next. With the pooling
//!   allocator (see `Engine::serving`) an instance's memories come from a pool made once.
//! - HTTP/1.1 (keep-alive, pipelining) and HTTP/2 with prior knowledge (h2c) on one port
//!   (`hyper_util`'s auto builder); bodies stream both ways through wasmtime's wasi:http host.
//! - Each request has a deadline: the engine's epoch ticks, and a guest past its deadline traps
//!   at its next epoch check (a loop included); a guest waiting in a host call is cut off by the
//!   same deadline on the host side. A trap, a deadline or a limit fails its own request (500 and
//!   a line on stderr) and nothing else.
//! - At most `max_in_flight` requests run at once; one more is answered 503 at once (with
//!   `Retry-After`), so a flood costs no memory.
//! - Output: whole lines ([`output`]).
//! - Drain: when the drain fd becomes readable (the cell's SIGTERM handler writes to it), the
//!   listener closes, open connections finish their requests in flight (HTTP/1.1 without
//!   keep-alive, HTTP/2 with GOAWAY), and [`serve`] returns 0.

mod budget;
pub mod counters;
mod output;
pub mod settings;

use std::convert::Infallible;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::sync::{oneshot, Semaphore};
use wasmtime::component::ResourceTable;
use wasmtime::{Store, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use budget::{MemoryBudget, RequestLimits};
pub use counters::{Counters, Snapshot};
pub use output::{LineOutput, LineStream, Target};
pub use settings::Settings;

use crate::grants::{Grants, RequestGrants};
use crate::memory::requests_memory_budget;
use crate::name_lookup::{self, NameLookup, NamesView};
use crate::outgoing::Outgoing;
use crate::{Error, Result};

/// How often the engine's epoch ticks while serving: the granularity of request deadlines.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Store data of one request.
pub struct RequestState {
    ctx: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    limits: RequestLimits,
    outgoing: Outgoing,
    resolver: Arc<wasmcell_net::Resolver>,
}

impl NamesView for RequestState {
    fn names(&mut self) -> NameLookup<'_> {
        NameLookup {
            table: &mut self.table,
            resolver: &self.resolver,
        }
    }
}

impl WasiView for RequestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.ctx,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for RequestState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.outgoing,
        }
    }
}

/// Links `component` for serving: full WASI 0.2 (as for a command) plus wasi:http.
pub(crate) fn link(
    engine: &wasmtime::Engine,
    component: &wasmtime::component::Component,
) -> std::result::Result<ProxyPre<RequestState>, String> {
    let mut linker = wasmtime::component::Linker::<RequestState>::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(|e| format!("{e:#}"))?;
    name_lookup::link(&mut linker).map_err(|e| format!("{e:#}"))?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
        .map_err(|e| format!("{e:#}"))?;
    let pre = linker
        .instantiate_pre(component)
        .map_err(|e| format!("{e:#}"))?;
    ProxyPre::new(pre).map_err(|e| format!("{e:#}"))
}

/// Binds the server's socket (inside the container's network namespace, before the task is
/// reported created, so that a probe or a first request never finds nothing listening).
pub fn bind(settings: &Settings) -> Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind(settings.addr)
        .map_err(|e| Error::io(format!("listen on {}", settings.addr), e))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| Error::io("make the listener non-blocking", e))?;
    Ok(listener)
}

/// What every request shares.
struct Shared {
    pre: ProxyPre<RequestState>,
    grants: RequestGrants,
    settings: Settings,
    in_flight: Arc<Semaphore>,
    /// The linear memory all requests in flight may hold together (under a memory limit).
    memory: Option<Arc<MemoryBudget>>,
    /// What the metrics count, when they are on.
    counters: Option<Arc<Counters>>,
}

impl Shared {
    /// A fresh store for one request, with the guest's grants and the request's deadline.
    fn store(&self, deadline: Instant) -> Store<RequestState> {
        let mut builder = WasiCtxBuilder::new();
        self.grants.setup.configure(&mut builder);
        let network = &self.grants.setup.network;
        builder
            .stdout(LineOutput(Target::Stdout))
            .stderr(LineOutput(Target::Stderr));
        let mut ctx = builder.build();
        // The directories were opened once, before the cell gave up its view of the host; each
        // request gets handles to the same ones.
        *ctx.filesystem() = self.grants.filesystem.clone();
        let state = RequestState {
            ctx,
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            limits: RequestLimits::new(self.grants.limits.clone(), self.memory.clone()),
            outgoing: Outgoing::new(
                network.resolver.clone(),
                network.trust.clone(),
                Some(deadline),
            ),
            resolver: network.resolver.clone(),
        };
        let mut store = Store::new(self.pre.engine(), state);
        store.limiter(|s| &mut s.limits);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            if Instant::now() >= deadline {
                Ok(UpdateDeadline::Interrupt)
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });
        store
    }
}

/// Serves until the drain fd becomes readable and the requests in flight have ended; 0.
/// `counters`: where the requests are counted, when metrics are on.
pub fn serve(
    pre: ProxyPre<RequestState>,
    grants: Grants,
    settings: Settings,
    listener: std::net::TcpListener,
    drain: OwnedFd,
    counters: Option<Arc<Counters>>,
) -> Result<i32> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(settings.workers)
        .thread_name("http")
        .enable_io()
        .enable_time()
        .build()
        .map_err(|e| Error::io("start the server's runtime", e))?;
    let engine = pre.engine().clone();
    let grants = grants.for_requests();
    let shared = Arc::new(Shared {
        in_flight: Arc::new(Semaphore::new(settings.max_in_flight)),
        memory: grants
            .setup
            .memory_limit
            .map(|limit| MemoryBudget::new(requests_memory_budget(limit))),
        pre,
        grants,
        settings,
        counters,
    });
    // The epoch ticks on a thread of its own, not as a task of the runtime: a guest that spins
    // holds the worker it runs on until the epoch moves, and a tick woken onto that worker (a
    // worker's next-task slot is not taken by the other workers) would wait behind it for
    // ever, and with it the request's deadline.
    let ticking = Arc::new(AtomicBool::new(true));
    let ticker = {
        let ticking = Arc::clone(&ticking);
        std::thread::Builder::new()
            .name("epoch".into())
            .spawn(move || {
                while ticking.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })
            .map_err(|e| Error::io("start the epoch thread", e))?
    };
    let code = runtime.block_on(accept_until_drained(shared, listener, drain));
    ticking.store(false, Ordering::Relaxed);
    let _ = ticker.join();
    runtime.shutdown_background();
    code
}

async fn accept_until_drained(
    shared: Arc<Shared>,
    listener: std::net::TcpListener,
    drain: OwnedFd,
) -> Result<i32> {
    let listener = tokio::net::TcpListener::from_std(listener)
        .map_err(|e| Error::io("register the listener", e))?;
    let drain = tokio::net::unix::pipe::Receiver::from_owned_fd(drain)
        .map_err(|e| Error::io("register the drain pipe", e))?;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().keep_alive(true).pipeline_flush(true);
    builder.http2().timer(TokioTimer::new());
    let graceful = GracefulShutdown::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        // Out of fds or memory: the connection is lost, the server goes on.
                        log::warn!("accept: {e}");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let shared = shared.clone();
                let service = hyper::service::service_fn(move |req| handle(shared.clone(), req));
                let connection = builder.serve_connection(TokioIo::new(stream), service).into_owned();
                let connection = graceful.watch(connection);
                tokio::spawn(async move {
                    let _ = connection.await;
                });
            }
            _ = drain.readable() => break,
        }
    }
    drop(listener);
    graceful.shutdown().await;
    // Connections are closed; a request whose response was sent may still be writing its body
    // into a connection that is gone, or be past it: every permit back means every request
    // task has ended.
    let all = u32::try_from(shared.settings.max_in_flight).unwrap_or(u32::MAX);
    let _ = shared.in_flight.acquire_many(all).await;
    Ok(0)
}

/// A response the host makes itself (503, 500).
fn host_response(status: StatusCode, text: &'static str) -> Response<HyperOutgoingBody> {
    let body = Full::new(Bytes::from_static(text.as_bytes()))
        .map_err(|never: Infallible| match never {})
        .boxed_unsync();
    let mut response = Response::new(body);
    *response.status_mut() = status;
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response.headers_mut().insert(
            hyper::header::RETRY_AFTER,
            hyper::header::HeaderValue::from_static("1"),
        );
    }
    response
}

async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> std::result::Result<Response<HyperOutgoingBody>, Infallible> {
    let arrived = Instant::now();
    let line = shared
        .settings
        .access_log
        .then(|| format!("{} {}", req.method(), path_of(&req)));
    let response = respond(&shared, req, arrived).await;
    if let Some(counters) = &shared.counters {
        counters.responded(response.status().as_u16(), arrived.elapsed());
    }
    if let Some(line) = line {
        output::LineStream::new(Target::Stderr).push(
            format!(
                "http: {line} {} {:.3} ms\n",
                response.status().as_u16(),
                arrived.elapsed().as_secs_f64() * 1000.0
            )
            .as_bytes(),
        );
    }
    Ok(response)
}

async fn respond(
    shared: &Shared,
    req: Request<Incoming>,
    arrived: Instant,
) -> Response<HyperOutgoingBody> {
    let Ok(permit) = shared.in_flight.clone().try_acquire_owned() else {
        if let Some(counters) = &shared.counters {
            counters.refused();
        }
        return host_response(StatusCode::SERVICE_UNAVAILABLE, "busy: too many requests\n");
    };
    let what = format!("{} {}", req.method(), path_of(&req));
    let timeout = shared.settings.deadline;
    let mut store = shared.store(arrived + timeout);
    let (sender, receiver) = oneshot::channel();
    let handles = (|| -> wasmtime::Result<_> {
        let mut http = store.data_mut().http();
        Ok((
            http.new_incoming_request(Scheme::Http, req)?,
            http.new_response_outparam(sender)?,
        ))
    })();
    let (request, outparam) = match handles {
        Ok(h) => h,
        Err(e) => {
            log_failure(&what, &format!("{e:#}"));
            return host_response(StatusCode::BAD_REQUEST, "bad request\n");
        }
    };
    let pre = shared.pre.clone();
    let counters = shared.counters.clone();
    let task = tokio::spawn(async move {
        let _permit = permit;
        let _flight = counters.as_deref().map(Counters::in_flight);
        let run = async {
            let proxy = pre.instantiate_async(&mut store).await?;
            proxy
                .wasi_http_incoming_handler()
                .call_handle(&mut store, request, outparam)
                .await
        };
        let past_deadline = || {
            if let Some(counters) = &counters {
                counters.past_deadline();
            }
            format!("its deadline of {} ms passed", timeout.as_millis())
        };
        let outcome = match tokio::time::timeout(timeout, run).await {
            // The epoch interrupts a guest past its deadline, which may come a tick before the
            // timer: the same cause, said the same way.
            Ok(Err(e))
                if e.downcast_ref::<wasmtime::Trap>() == Some(&wasmtime::Trap::Interrupt) =>
            {
                Err(past_deadline())
            }
            Ok(result) => result.map_err(|e| {
                if let (Some(counters), Some(_)) = (&counters, e.downcast_ref::<wasmtime::Trap>()) {
                    counters.trapped();
                }
                format!("{e:?}")
            }),
            Err(_) => Err(past_deadline()),
        };
        // A guest usually traps when its memory cannot grow: say why it could not.
        outcome.map_err(|message| match store.data_mut().limits.refused() {
            Some(why) => format!("{message} (after {why})"),
            None => message,
        })
    });
    match receiver.await {
        Ok(Ok(response)) => {
            // The body may still be streaming from the guest: a failure from here on ends the
            // body (the client sees it cut), and the log names the cause.
            tokio::spawn(async move {
                if let Ok(Err(message)) = task.await {
                    log_failure(&what, &message);
                }
            });
            response
        }
        Ok(Err(code)) => {
            log_failure(&what, &format!("the handler answered an error: {code:?}"));
            let _ = task.await;
            host_response(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n")
        }
        Err(_) => {
            let message = match task.await {
                Ok(Err(message)) => message,
                Ok(Ok(())) => "the handler returned without a response".to_owned(),
                Err(e) => format!("the request's task ended: {e}"),
            };
            log_failure(&what, &message);
            host_response(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n")
        }
    }
}

/// The path and query of a request (HTTP/2 requests carry the whole URI).
fn path_of(req: &Request<Incoming>) -> &str {
    req.uri().path_and_query().map_or("/", |p| p.as_str())
}

/// One line on the container's stderr for a failed request.
fn log_failure(what: &str, message: &str) {
    let message = message.replace('\n', " | ");
    LineStream::new(Target::Stderr)
        .push(format!("wasmcell: request {what} failed: {message}\n").as_bytes());
}
