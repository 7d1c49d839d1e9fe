//! kube-runtime controller turning `InsurerIntegration` resources into poller Deployments (filled in by the operator issue).
