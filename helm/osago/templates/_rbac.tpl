{{/* The operator's reconcile permissions (ClusterRole, or a Role per watched namespace). */}}
{{- define "osago.operatorRules" -}}
- apiGroups: [osago.io]
  resources: [insurerintegrations]
  verbs: [get, list, watch, patch, update]
- apiGroups: [osago.io]
  resources: [insurerintegrations/status]
  verbs: [get, patch, update]
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, update, patch, delete]
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, list, watch, create, update, patch, delete]
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, list, watch]
- apiGroups: ["", events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- end }}

{{/* Leader election: a Lease in the operator's namespace. */}}
{{- define "osago.leaderElectionRules" -}}
- apiGroups: [coordination.k8s.io]
  resources: [leases]
  verbs: [get, list, watch, create, update, patch]
{{- end }}
