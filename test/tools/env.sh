# Sourced by the test and bench runners: exports the WASMCELL_* variables that point the test
# harness (test/e2e, test/cluster) at the pinned tools of versions.env, building any that is
# not in the cache yet (test/tools/build.sh). WASMCELL_CONTAINERD_DIR is left to the caller,
# which picks the containerd to run against; WASMCELL_CONTAINERD2 names the pinned 2.x.
# shellcheck shell=bash
_wasmcell_tool() { bash "$(dirname "${BASH_SOURCE[0]}")/build.sh" "$1"; }
WASMCELL_CONTAINERD2=$(_wasmcell_tool containerd)
WASMCELL_CRICTL=$(_wasmcell_tool crictl)/crictl
WASMCELL_CRITEST=$(_wasmcell_tool critest)/critest
WASMCELL_NERDCTL=$(_wasmcell_tool nerdctl)/nerdctl
WASMCELL_CRANE=$(_wasmcell_tool crane)/crane
WASMCELL_KUBERNETES_VALIDATE=$(_wasmcell_tool kubernetes-validate)/kubernetes-validate
WASMCELL_KUBECTL=$(_wasmcell_tool kubernetes)/kubectl
WASMCELL_ETCD=$(_wasmcell_tool etcd)/etcd
WASMCELL_KUBE_PROXY=$(_wasmcell_tool kube-proxy)/kube-proxy
WASMCELL_COREDNS=$(_wasmcell_tool coredns)/coredns
WASMCELL_PROMETHEUS=$(_wasmcell_tool prometheus)/prometheus
WASMCELL_CNI_PLUGINS=$(_wasmcell_tool cni-plugins)
export WASMCELL_CONTAINERD2 WASMCELL_CRICTL WASMCELL_CRITEST WASMCELL_NERDCTL WASMCELL_CRANE \
  WASMCELL_KUBERNETES_VALIDATE WASMCELL_KUBECTL WASMCELL_ETCD WASMCELL_CNI_PLUGINS \
  WASMCELL_KUBE_PROXY WASMCELL_COREDNS WASMCELL_PROMETHEUS
unset -f _wasmcell_tool
