{{/* Names ------------------------------------------------------------------------------ */}}

{{- define "osago.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The prefix of every object name: the release name, plus the chart name unless it is in it. */}}
{{- define "osago.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* "<fullname>-<component>"; usage: include "osago.componentName" (list . "core-app") */}}
{{- define "osago.componentName" -}}
{{- $root := index . 0 }}
{{- printf "%s-%s" (include "osago.fullname" $root) (index . 1) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "osago.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels ----------------------------------------------------------------------------- */}}

{{/* Selector labels of a component; usage: include "osago.selectorLabels" (list . "core-app") */}}
{{- define "osago.selectorLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ include "osago.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{/* Every label of a component's objects; usage: include "osago.labels" (list . "core-app") */}}
{{- define "osago.labels" -}}
{{- $root := index . 0 -}}
{{ include "osago.selectorLabels" . }}
app.kubernetes.io/part-of: osago
app.kubernetes.io/version: {{ $root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ $root.Release.Service }}
helm.sh/chart: {{ include "osago.chart" $root }}
{{- with $root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Images ----------------------------------------------------------------------------- */}}

{{/* "repo:tag" of a component: its own image settings over the platform image.
     usage: include "osago.image" (list . .Values.coreApp.image) */}}
{{- define "osago.image" -}}
{{- $root := index . 0 -}}
{{- $own := index . 1 | default dict -}}
{{- $repo := $own.repository | default $root.Values.image.repository -}}
{{- $tag := $own.tag | default $root.Values.image.tag | default $root.Chart.AppVersion -}}
{{- printf "%s:%s" $repo (toString $tag) -}}
{{- end }}

{{- define "osago.imagePullPolicy" -}}
{{- $root := index . 0 -}}
{{- $own := index . 1 | default dict -}}
{{- $own.pullPolicy | default $root.Values.image.pullPolicy -}}
{{- end }}

{{- define "osago.imagePullSecrets" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
{{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* Security -------------------------------------------------------------------------- */}}

{{- define "osago.podSecurityContext" -}}
{{- toYaml .Values.podSecurityContext }}
{{- end }}

{{- define "osago.containerSecurityContext" -}}
{{- toYaml .Values.containerSecurityContext }}
{{- end }}

{{/* The restricted profile for a third-party image that runs as a given uid (Postgres, Kafka).
     usage: include "osago.podSecurityContextAs" (list . 999) */}}
{{- define "osago.podSecurityContextAs" -}}
{{- $root := index . 0 -}}
{{- $uid := index . 1 -}}
{{- $ctx := deepCopy $root.Values.podSecurityContext -}}
{{- $_ := set $ctx "runAsUser" $uid -}}
{{- $_ := set $ctx "runAsGroup" $uid -}}
{{- $_ := set $ctx "fsGroup" $uid -}}
{{- toYaml $ctx }}
{{- end }}

{{/* Wiring ----------------------------------------------------------------------------- */}}

{{- define "osago.kafkaBrokers" -}}
{{- if .Values.kafka.enabled -}}
{{- printf "%s.%s.svc:%d" (include "osago.componentName" (list . "kafka")) .Release.Namespace (int .Values.kafka.port) -}}
{{- else -}}
{{- required "externalKafka.brokers is required when kafka.enabled is false" .Values.externalKafka.brokers -}}
{{- end -}}
{{- end }}

{{- define "osago.postgresHost" -}}
{{- printf "%s.%s.svc" (include "osago.componentName" (list . "postgresql")) .Release.Namespace -}}
{{- end }}

{{/* The Secret and key holding a service's database URL; usage: include "osago.databaseSecret" (list . "coreApp") → "name key" */}}
{{- define "osago.databaseSecretName" -}}
{{- $root := index . 0 -}}
{{- $svc := index . 1 -}}
{{- $ext := index $root.Values.externalDatabase $svc -}}
{{- if and (not $root.Values.postgresql.enabled) $ext.existingSecret -}}
{{- $ext.existingSecret -}}
{{- else if eq $svc "coreApp" -}}
{{- include "osago.componentName" (list $root "core-app") -}}
{{- else -}}
{{- include "osago.componentName" (list $root "aggregator") -}}
{{- end -}}
{{- end }}

{{- define "osago.databaseSecretKey" -}}
{{- $root := index . 0 -}}
{{- $svc := index . 1 -}}
{{- $ext := index $root.Values.externalDatabase $svc -}}
{{- if and (not $root.Values.postgresql.enabled) $ext.existingSecret -}}
{{- $ext.existingSecretKey -}}
{{- else -}}
database-url
{{- end -}}
{{- end }}

{{/* Reads one key of an existing Secret (empty when it or the key does not exist, and always
     empty under `helm template`); usage: include "osago.existingSecretValue" (list . "name" "key") */}}
{{- define "osago.existingSecretValue" -}}
{{- $root := index . 0 -}}
{{- $secret := lookup "v1" "Secret" $root.Release.Namespace (index . 1) -}}
{{- if and $secret $secret.data -}}
{{- index $secret.data (index . 2) | default "" | b64dec -}}
{{- end -}}
{{- end }}

{{/* A secret value: given > kept from the existing Secret > generated.
     usage: include "osago.secretValue" (list . "given" "secret-name" "key" 32) */}}
{{- define "osago.secretValue" -}}
{{- $root := index . 0 -}}
{{- $given := index . 1 -}}
{{- if $given -}}
{{- $given -}}
{{- else -}}
{{- $kept := include "osago.existingSecretValue" (list $root (index . 2) (index . 3)) -}}
{{- $kept | default (randAlphaNum (int (index . 4))) -}}
{{- end -}}
{{- end }}

{{/* Probes of the Rust services (platform crate: /healthz, /readyz). */}}
{{- define "osago.probes" -}}
startupProbe:
  httpGet: {path: /healthz, port: http}
  periodSeconds: 2
  failureThreshold: 90
livenessProbe:
  httpGet: {path: /healthz, port: http}
  periodSeconds: 10
  timeoutSeconds: 3
  failureThreshold: 3
readinessProbe:
  httpGet: {path: /readyz, port: http}
  periodSeconds: 5
  timeoutSeconds: 3
  failureThreshold: 2
{{- end }}

{{/* Volumes every read-only Rust container gets: a writable /tmp. */}}
{{- define "osago.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: 64Mi
{{- end }}

{{- define "osago.tmpMount" -}}
- name: tmp
  mountPath: /tmp
{{- end }}

{{/* Env of the Rust services' logging and trace export. */}}
{{- define "osago.logEnv" -}}
- name: RUST_LOG
  value: {{ .Values.logLevel | quote }}
- name: LOG_FORMAT
  value: json
{{- with .Values.otlpEndpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ . | quote }}
{{- end }}
{{- end }}

{{- define "osago.pullSecretNames" -}}
{{- $names := list -}}
{{- range .Values.imagePullSecrets }}{{ $names = append $names .name }}{{ end -}}
{{- join "," $names -}}
{{- end }}

{{/* Changes when a credential given in values changes, so the pods using it restart. (Not the
     rendered Secrets: a first install's generated values are random in any other rendering.) */}}
{{- define "osago.secretsChecksum" -}}
{{- $given := dict "secrets" .Values.secrets "auth" .Values.postgresql.auth "external" .Values.externalDatabase "partners" .Values.aggregator.partners "postgresql" .Values.postgresql.enabled -}}
{{- toJson $given | sha256sum | trunc 16 -}}
{{- end }}
