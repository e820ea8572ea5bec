//! The cluster's Service addresses, which the API server, the pod network, the kubelet and
//! `services` agree on.

/// The Service range (of the 198.18.0.0/15 test range).
pub const SERVICE_SUBNET: &str = "198.18.128.0/24";
/// The `kube-dns` Service's address: the kubelet's `clusterDNS`.
pub const CLUSTER_DNS: &str = "198.18.128.10";
/// The cluster domain.
pub const CLUSTER_DOMAIN: &str = "cluster.local";
