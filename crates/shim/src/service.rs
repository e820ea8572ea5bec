//! The ttrpc Task service: each method forwards to [`Tasks`]; errors become ttrpc codes in
//! `error.rs`. RPCs wasmcell does not implement yet answer NotImplemented (never the generated
//! default, which would say NotFound).

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
use crate::tasks::Tasks;

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

fn logged<T>(rpc: &str, id: &str, r: crate::error::Result<T>) -> TtrpcResult<T> {
    if let Err(e) = &r {
        log::warn!("{rpc} {id}: {e}");
    }
    Ok(r?)
}

impl Task for Service {
    fn create(&self, _: &TtrpcContext, req: CreateTaskRequest) -> TtrpcResult<CreateTaskResponse> {
        let id = req.id.clone();
        logged("create", &id, self.tasks.create(req))
    }

    fn start(&self, _: &TtrpcContext, req: StartRequest) -> TtrpcResult<StartResponse> {
        let id = req.id.clone();
        logged("start", &id, self.tasks.start(req))
    }

    fn kill(&self, _: &TtrpcContext, req: KillRequest) -> TtrpcResult<Empty> {
        let id = req.id.clone();
        logged("kill", &id, self.tasks.kill(req).map(|()| Empty::new()))
    }

    fn wait(&self, _: &TtrpcContext, req: WaitRequest) -> TtrpcResult<WaitResponse> {
        Ok(self.tasks.wait(req)?)
    }

    fn delete(&self, _: &TtrpcContext, req: DeleteRequest) -> TtrpcResult<DeleteResponse> {
        let id = req.id.clone();
        logged("delete", &id, self.tasks.delete(req))
    }

    fn state(&self, _: &TtrpcContext, req: StateRequest) -> TtrpcResult<StateResponse> {
        Ok(self.tasks.state(req)?)
    }

    fn pids(&self, _: &TtrpcContext, req: PidsRequest) -> TtrpcResult<PidsResponse> {
        Ok(self.tasks.pids(req)?)
    }

    fn connect(&self, _: &TtrpcContext, req: ConnectRequest) -> TtrpcResult<ConnectResponse> {
        Ok(self.tasks.connect(req)?)
    }

    fn shutdown(&self, _: &TtrpcContext, req: ShutdownRequest) -> TtrpcResult<Empty> {
        Ok(self.tasks.shutdown(req).map(|()| Empty::new())?)
    }

    fn close_io(&self, _: &TtrpcContext, req: CloseIORequest) -> TtrpcResult<Empty> {
        Ok(self.tasks.close_io(&req.id).map(|()| Empty::new())?)
    }

    fn exec(&self, _: &TtrpcContext, _: ExecProcessRequest) -> TtrpcResult<Empty> {
        not_implemented("exec")
    }

    fn resize_pty(&self, _: &TtrpcContext, _: ResizePtyRequest) -> TtrpcResult<Empty> {
        not_implemented("resize pty")
    }

    fn pause(&self, _: &TtrpcContext, _: PauseRequest) -> TtrpcResult<Empty> {
        not_implemented("pause")
    }

    fn resume(&self, _: &TtrpcContext, _: ResumeRequest) -> TtrpcResult<Empty> {
        not_implemented("resume")
    }

    fn checkpoint(&self, _: &TtrpcContext, _: CheckpointTaskRequest) -> TtrpcResult<Empty> {
        not_implemented("checkpoint")
    }

    fn update(&self, _: &TtrpcContext, _: UpdateTaskRequest) -> TtrpcResult<Empty> {
        not_implemented("update")
    }

    fn stats(&self, _: &TtrpcContext, _: StatsRequest) -> TtrpcResult<StatsResponse> {
        not_implemented("stats")
    }
}
