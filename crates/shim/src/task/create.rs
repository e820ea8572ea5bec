//! Create: the launcher makes the process (see `crate::backend::launch`); the task enters the
//! registry, TaskCreate is sent, and its pids are registered for their exits.

use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use containerd_shim::api::{CreateTaskRequest, CreateTaskResponse};
use containerd_shim::protos::events::task::{TaskCreate, TaskIO};
use containerd_shim::protos::topics::TASK_CREATE_EVENT_TOPIC;

use super::lifecycle::TaskState;
use super::registry::Owner;
use super::{Task, Tasks};
use crate::error::{Error, Result};
use crate::sync::lock;

impl Tasks {
    /// Create.
    pub fn create(&self, req: CreateTaskRequest) -> Result<CreateTaskResponse> {
        // Every process of this task is started after this instant.
        let began = Instant::now();
        let id = req.id.clone();
        if id.is_empty() {
            return Err(Error::InvalidArgument("task id is empty".into()));
        }
        let _reservation = self.reserve(&id)?;
        if !req.checkpoint.is_empty() {
            return Err(Error::NotImplemented(
                "checkpoint/restore is not implemented".into(),
            ));
        }
        let launched = self.launcher.launch(&req)?;

        let mut io = TaskIO::new();
        io.stdin = req.stdin.clone();
        io.stdout = req.stdout.clone();
        io.stderr = req.stderr.clone();
        io.terminal = req.terminal;
        let (logger_pid, logger_pipes) = match launched.logger {
            Some(logger) => (Some(logger.pid), logger.pipes),
            None => (None, Vec::new()),
        };
        let task = Arc::new(Task {
            id: id.clone(),
            bundle: PathBuf::from(&req.bundle),
            pid: launched.pid,
            backend: launched.backend,
            io: io.clone(),
            rootfs: launched.rootfs,
            logger_pid,
            state: Mutex::new(TaskState::new(&id)),
            changed: Condvar::new(),
            logger_gone: Mutex::new(false),
            logger_changed: Condvar::new(),
            logger_pipes: Mutex::new(logger_pipes),
            execs: Mutex::new(std::collections::HashMap::new()),
            creating_execs: Mutex::new(std::collections::HashSet::new()),
        });
        lock(&self.tasks).insert(id.clone(), Arc::clone(&task));

        if let Some(lpid) = logger_pid {
            if self
                .register(lpid, Owner::Logger(id.clone()), began)
                .is_some()
            {
                task.logger_exited();
            }
        }
        {
            let _st = lock(&task.state);
            let mut ev = TaskCreate::new();
            ev.container_id = id.clone();
            ev.bundle = req.bundle.clone();
            ev.rootfs = req.rootfs.clone();
            ev.io = Some(io).into();
            ev.pid = task.pid;
            self.events.send(TASK_CREATE_EVENT_TOPIC, Box::new(ev));
        }
        if let Some(code) = self.register(launched.watched, Owner::Task(id), began) {
            self.task_exited(Arc::clone(&task), code);
        }
        let mut resp = CreateTaskResponse::new();
        resp.pid = task.pid;
        Ok(resp)
    }
}
