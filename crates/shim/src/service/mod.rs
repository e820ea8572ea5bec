//! The ttrpc Task service: each method forwards to [`Tasks`]; errors become ttrpc codes in
//! `error.rs`. RPCs wasmcell does not implement yet answer NotImplemented (never the generated
//! default, which would say NotFound).

pub mod events;

use std::sync::Arc;

use containerd_shim::api::{
    CheckpointTaskRequest, CloseIORequest, ConnectRequest, ConnectResponse, CreateTaskRequest,
    CreateTaskResponse, DeleteRequest, DeleteResponse, Empty, ExecProcessRequest, KillRequest,
    PauseRequest, PidsRequest, PidsResponse, ResizePtyRequest, ResumeRequest, ShutdownRequest,
    StartRequest, StartResponse, StateRequest, StateResponse, StatsRequest, StatsResponse,
    UpdateTaskRequest, WaitRequest, WaitResponse,
};
use containerd_shim::{Task, TtrpcContext, TtrpcResult};

use crate::error::Error;
use crate::task::Tasks;

/// The Task service containerd talks to.
pub struct Service {
    tasks: Arc<Tasks>,
}

impl Service {
    /// Serves `tasks`.
    pub fn new(tasks: Arc<Tasks>) -> Service {
        Service { tasks }
    }
}

fn not_implemented<T>(what: &str) -> TtrpcResult<T> {
    Err(Error::NotImplemented(format!("{what} is not implemented by wasmcell")).into())
}

/// Runs one RPC: its error is logged, and a panic (a bug, or a std assertion such as the one
/// `Command::spawn` makes about reaping) becomes an Internal error instead of silently killing
/// the ttrpc handler thread and leaving containerd waiting forever for the answer.
fn serve<T>(rpc: &str, id: &str, f: impl FnOnce() -> crate::error::Result<T>) -> TtrpcResult<T> {
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        Err(Error::Internal(format!("{rpc} panicked: {what}")))
    });
    if let Err(e) = &r {
        log::warn!("{rpc} {id}: {e}");
    }
    Ok(r?)
}

impl Task for Service {
    fn create(&self, _: &TtrpcContext, req: CreateTaskRequest) -> TtrpcResult<CreateTaskResponse> {
        let id = req.id.clone();
        serve("create", &id, || self.tasks.create(req))
    }

    fn start(&self, _: &TtrpcContext, req: StartRequest) -> TtrpcResult<StartResponse> {
        let id = req.id.clone();
        serve("start", &id, || self.tasks.start(req))
    }

    fn kill(&self, _: &TtrpcContext, req: KillRequest) -> TtrpcResult<Empty> {
        let id = req.id.clone();
        serve("kill", &id, || self.tasks.kill(req).map(|()| Empty::new()))
    }

    fn wait(&self, _: &TtrpcContext, req: WaitRequest) -> TtrpcResult<WaitResponse> {
        let id = req.id.clone();
        serve("wait", &id, || self.tasks.wait(req))
    }

    fn delete(&self, _: &TtrpcContext, req: DeleteRequest) -> TtrpcResult<DeleteResponse> {
        let id = req.id.clone();
        serve("delete", &id, || self.tasks.delete(req))
    }

    fn state(&self, _: &TtrpcContext, req: StateRequest) -> TtrpcResult<StateResponse> {
        let id = req.id.clone();
        serve("state", &id, || self.tasks.state(req))
    }

    fn pids(&self, _: &TtrpcContext, req: PidsRequest) -> TtrpcResult<PidsResponse> {
        let id = req.id.clone();
        serve("pids", &id, || self.tasks.pids(req))
    }

    fn connect(&self, _: &TtrpcContext, req: ConnectRequest) -> TtrpcResult<ConnectResponse> {
        let id = req.id.clone();
        serve("connect", &id, || self.tasks.connect(req))
    }

    fn shutdown(&self, _: &TtrpcContext, req: ShutdownRequest) -> TtrpcResult<Empty> {
        serve("shutdown", "", || {
            self.tasks.shutdown(req).map(|()| Empty::new())
        })
    }

    fn close_io(&self, _: &TtrpcContext, req: CloseIORequest) -> TtrpcResult<Empty> {
        serve("close io", &req.id, || {
            self.tasks
                .close_io(&req.id, &req.exec_id)
                .map(|()| Empty::new())
        })
    }

    fn exec(&self, _: &TtrpcContext, req: ExecProcessRequest) -> TtrpcResult<Empty> {
        let id = req.id.clone();
        serve("exec", &id, || self.tasks.exec(req).map(|()| Empty::new()))
    }

    fn resize_pty(&self, _: &TtrpcContext, req: ResizePtyRequest) -> TtrpcResult<Empty> {
        serve("resize pty", &req.id, || {
            self.tasks
                .resize_pty(&req.id, &req.exec_id, req.width, req.height)
                .map(|()| Empty::new())
        })
    }

    fn pause(&self, _: &TtrpcContext, req: PauseRequest) -> TtrpcResult<Empty> {
        let id = req.id.clone();
        serve("pause", &id, || {
            self.tasks.pause(req).map(|()| Empty::new())
        })
    }

    fn resume(&self, _: &TtrpcContext, req: ResumeRequest) -> TtrpcResult<Empty> {
        let id = req.id.clone();
        serve("resume", &id, || {
            self.tasks.resume(req).map(|()| Empty::new())
        })
    }

    fn checkpoint(&self, _: &TtrpcContext, _: CheckpointTaskRequest) -> TtrpcResult<Empty> {
        not_implemented("checkpoint")
    }

    fn update(&self, _: &TtrpcContext, req: UpdateTaskRequest) -> TtrpcResult<Empty> {
        let id = req.id.clone();
        serve("update", &id, || {
            self.tasks.update(req).map(|()| Empty::new())
        })
    }

    fn stats(&self, _: &TtrpcContext, req: StatsRequest) -> TtrpcResult<StatsResponse> {
        let id = req.id.clone();
        serve("stats", &id, || self.tasks.stats(req))
    }
}
