{{/* The operator's reconcile permissions (ClusterRole, or a Role per watched namespace), as its code
     uses them (operator/src/controller.rs) and deploy/rbac/ lists them: it watches InsurerIntegrations,
     server-side-applies their status, and sets blockOwnerDeletion owner references (finalizers
     update); it owns one poller ConfigMap + Deployment each, written by server-side apply (create
     for a new object, patch after; the Deployment is also read to report what changed; the
     garbage collector deletes both through owner references);
     it records Events. Pods mount their Secrets themselves: no Secret access. */}}
{{- define "osago.operatorRules" -}}
- apiGroups: [osago.io]
  resources: [insurerintegrations]
  verbs: [list, watch]
- apiGroups: [osago.io]
  resources: [insurerintegrations/status]
  verbs: [patch]
# Owner references with blockOwnerDeletion, where the OwnerReferencesPermissionEnforcement
# admission plugin is on.
- apiGroups: [osago.io]
  resources: [insurerintegrations/finalizers]
  verbs: [update]
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, patch]
- apiGroups: [""]
  resources: [configmaps]
  verbs: [list, watch, create, patch]
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- end }}

{{/* Leader election (operator/src/leader.rs): one Lease in the operator's namespace, read,
     created, and renewed by replace. */}}
{{- define "osago.leaderElectionRules" -}}
- apiGroups: [coordination.k8s.io]
  resources: [leases]
  verbs: [get, create, update]
{{- end }}
