//! `wasi:sockets/ip-name-lookup` answered by the container's resolver ([`wasmcell_net::Resolver`])
//! instead of wasmtime-wasi's, which asks the C library: a static binary's libc would load NSS
//! modules (executable mappings the cell's seccomp filter refuses, from the host's files, which
//! the cell no longer sees) and read the host's resolv.conf, not the container's.
//!
//! The interface is linked over wasmtime-wasi's (the linker allows shadowing for it alone), with
//! wasmtime-wasi's own resource type for the stream: each stream is a lookup running on the
//! runtime the host calls run on, kept in the store's table under that type's handle numbers.

use std::future::Future as _;
use std::net::IpAddr;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use wasmcell_net::{LookupError, Resolver};
use wasmtime::component::{HasData, Linker, Resource, ResourceTable};
use wasmtime_wasi::p2::bindings::sockets::ip_name_lookup::{
    add_to_linker, Host, HostResolveAddressStream, ResolveAddressStream,
};
use wasmtime_wasi::p2::bindings::sockets::network::{self, ErrorCode, IpAddress, Network};
use wasmtime_wasi::p2::{DynPollable, Pollable, SocketError};

/// The store data's part in name lookup: its resource table and the container's resolver.
pub(crate) struct NameLookup<'a> {
    pub(crate) table: &'a mut ResourceTable,
    pub(crate) resolver: &'a Arc<Resolver>,
}

/// Store data whose guests may look names up.
pub(crate) trait NamesView: Send + 'static {
    fn names(&mut self) -> NameLookup<'_>;
}

struct HasNames;

impl HasData for HasNames {
    type Data<'a> = NameLookup<'a>;
}

/// Replaces wasmtime-wasi's `wasi:sockets/ip-name-lookup` in `linker` with the resolver's.
pub(crate) fn link<T: NamesView>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let linked = add_to_linker::<T, HasNames>(linker, T::names);
    linker.allow_shadowing(false);
    linked
}

/// One lookup: running, then its addresses handed out one at a time.
struct PendingLookup {
    state: State,
}

enum State {
    Running(tokio::task::JoinHandle<Result<Vec<IpAddr>, LookupError>>),
    Done(Result<std::vec::IntoIter<IpAddr>, ErrorCode>),
}

impl PendingLookup {
    fn finish(&mut self, joined: Result<Result<Vec<IpAddr>, LookupError>, tokio::task::JoinError>) {
        self.state = State::Done(match joined {
            Ok(Ok(addrs)) => Ok(addrs.into_iter()),
            Ok(Err(e)) => Err(error_code(&e)),
            Err(_) => Err(ErrorCode::PermanentResolverFailure),
        });
    }
}

#[async_trait::async_trait]
impl Pollable for PendingLookup {
    async fn ready(&mut self) {
        if let State::Running(handle) = &mut self.state {
            let joined = handle.await;
            self.finish(joined);
        }
    }
}

/// What a guest is told, as getaddrinfo's EAI_* codes map to WASI's.
fn error_code(e: &LookupError) -> ErrorCode {
    match e {
        LookupError::InvalidName { .. } => ErrorCode::InvalidArgument,
        LookupError::NotFound { .. } => ErrorCode::NameUnresolvable,
        LookupError::Timeout { .. } | LookupError::Temporary { .. } => {
            ErrorCode::TemporaryResolverFailure
        }
        LookupError::Failed { .. } => ErrorCode::PermanentResolverFailure,
    }
}

/// The table's handle of a stream, typed as what this module keeps there.
fn ours(stream: &Resource<ResolveAddressStream>) -> Resource<PendingLookup> {
    if stream.owned() {
        Resource::new_own(stream.rep())
    } else {
        Resource::new_borrow(stream.rep())
    }
}

/// The error conversions `ip-name-lookup` shares with `wasi:sockets/network` (its functions
/// return network's error code); they behave as wasmtime-wasi's.
impl network::Host for NameLookup<'_> {
    fn convert_error_code(&mut self, error: SocketError) -> wasmtime::Result<ErrorCode> {
        error.downcast()
    }

    fn network_error_code(
        &mut self,
        err: Resource<wasmtime_wasi::p2::bindings::io::error::Error>,
    ) -> wasmtime::Result<Option<ErrorCode>> {
        let err = self.table.get(&err)?;
        Ok(err.downcast_ref::<std::io::Error>().map(ErrorCode::from))
    }
}

/// Required of the trait's supertraits; the linker that uses it is `ip-name-lookup`'s, which
/// never drops a network (wasmtime-wasi's `network` interface stays linked for that).
impl network::HostNetwork for NameLookup<'_> {
    fn drop(&mut self, network: Resource<Network>) -> wasmtime::Result<()> {
        self.table.delete(network)?;
        Ok(())
    }
}

impl Host for NameLookup<'_> {
    fn resolve_addresses(
        &mut self,
        network: Resource<Network>,
        name: String,
    ) -> Result<Resource<ResolveAddressStream>, SocketError> {
        // The network handle is the capability to look names up; nothing else of it is used.
        self.table.get(&network)?;
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| SocketError::from(ErrorCode::PermanentResolverFailure))?;
        let resolver = Arc::clone(self.resolver);
        let handle = runtime.spawn(async move { resolver.lookup(&name).await });
        let pending = self.table.push(PendingLookup {
            state: State::Running(handle),
        })?;
        Ok(Resource::new_own(pending.rep()))
    }
}

impl HostResolveAddressStream for NameLookup<'_> {
    fn resolve_next_address(
        &mut self,
        stream: Resource<ResolveAddressStream>,
    ) -> Result<Option<IpAddress>, SocketError> {
        let pending = self.table.get_mut(&ours(&stream))?;
        if let State::Running(handle) = &mut pending.state {
            if !handle.is_finished() {
                return Err(ErrorCode::WouldBlock.into());
            }
            let mut cx = Context::from_waker(Waker::noop());
            let Poll::Ready(joined) = std::pin::Pin::new(handle).poll(&mut cx) else {
                return Err(ErrorCode::WouldBlock.into());
            };
            pending.finish(joined);
        }
        match &mut pending.state {
            State::Done(Ok(addrs)) => Ok(addrs.next().map(|a| a.to_canonical().into())),
            State::Done(Err(code)) => Err((*code).into()),
            State::Running(_) => Err(ErrorCode::WouldBlock.into()),
        }
    }

    fn subscribe(
        &mut self,
        stream: Resource<ResolveAddressStream>,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        wasmtime_wasi::p2::subscribe(self.table, ours(&stream))
    }

    fn drop(&mut self, stream: Resource<ResolveAddressStream>) -> wasmtime::Result<()> {
        let pending = self.table.delete(ours(&stream))?;
        if let State::Running(handle) = pending.state {
            handle.abort();
        }
        Ok(())
    }
}
