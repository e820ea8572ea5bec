//! CRI's RuntimeService called over gRPC on containerd's socket, as the kubelet calls it: no
//! `crictl` process between the caller and containerd, so a timed call measures containerd and
//! the shim only. Just the calls the benchmarks time; their messages are declared here with the
//! names and field numbers of CRI's `api.proto` (package `runtime.v1` of k8s.io/cri-api).

use std::path::Path;

use containerd_client::tonic::codec::ProstCodec;
use containerd_client::tonic::transport::Channel;
use containerd_client::tonic::{client::Grpc, Request};

/// CRI's `ExecSyncRequest`.
#[derive(Clone, PartialEq, prost::Message)]
struct ExecSyncRequest {
    #[prost(string, tag = "1")]
    container_id: String,
    #[prost(string, repeated, tag = "2")]
    cmd: Vec<String>,
    /// Seconds; 0 is none.
    #[prost(int64, tag = "3")]
    timeout: i64,
}

/// CRI's `ExecSyncResponse`.
#[derive(Clone, PartialEq, prost::Message)]
struct ExecSyncResponse {
    #[prost(bytes = "vec", tag = "1")]
    stdout: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    stderr: Vec<u8>,
    #[prost(int32, tag = "3")]
    exit_code: i32,
}

/// What an ExecSync answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecSyncOutput {
    /// The program's exit status.
    pub exit_code: i32,
    /// Its stdout.
    pub stdout: Vec<u8>,
    /// Its stderr.
    pub stderr: Vec<u8>,
}

/// One connection to containerd's CRI, callable from several threads at once (the calls share
/// the connection, as the kubelet's do).
pub struct CriClient {
    runtime: tokio::runtime::Runtime,
    channel: Channel,
}

impl CriClient {
    /// Connects to the containerd whose socket is `socket`.
    pub fn connect(socket: &Path) -> Result<CriClient, String> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| format!("tokio runtime: {e}"))?;
        let channel = runtime
            .block_on(containerd_client::connect(socket))
            .map_err(|e| format!("connect to {}: {e}", socket.display()))?;
        Ok(CriClient { runtime, channel })
    }

    /// `ExecSync` of `cmd` in container `container`, with a timeout of `timeout_secs` (0: none).
    pub fn exec_sync(
        &self,
        container: &str,
        cmd: &[&str],
        timeout_secs: i64,
    ) -> Result<ExecSyncOutput, String> {
        let request = ExecSyncRequest {
            container_id: container.to_owned(),
            cmd: cmd.iter().map(|s| (*s).to_owned()).collect(),
            timeout: timeout_secs,
        };
        let mut grpc = Grpc::new(self.channel.clone());
        let path = http::uri::PathAndQuery::from_static("/runtime.v1.RuntimeService/ExecSync");
        let answer = self.runtime.block_on(async move {
            grpc.ready()
                .await
                .map_err(|e| format!("CRI connection: {e}"))?;
            grpc.unary::<ExecSyncRequest, ExecSyncResponse, _>(
                Request::new(request),
                path,
                ProstCodec::default(),
            )
            .await
            .map_err(|s| format!("ExecSync in {container}: {:?}: {}", s.code(), s.message()))
        })?;
        let answer = answer.into_inner();
        Ok(ExecSyncOutput {
            exit_code: answer.exit_code,
            stdout: answer.stdout,
            stderr: answer.stderr,
        })
    }
}
