{{/* Init containers that hold a service until the in-cluster PostgreSQL and Kafka answer, so a
     fresh install converges without a crash loop. They use the PostgreSQL image (pg_isready, and
     bash's /dev/tcp for Kafka); nothing is waited for when the dependency is external.
     usage: include "osago.waitForDependencies" (list . true) — the second item: wait for Kafka too. */}}
{{- define "osago.waitForDependencies" -}}
{{- $root := index . 0 -}}
{{- $kafka := index . 1 -}}
{{- $pg := $root.Values.postgresql -}}
{{- if or $pg.enabled (and $kafka $root.Values.kafka.enabled) }}
initContainers:
  {{- if $pg.enabled }}
  - name: wait-for-postgresql
    image: "{{ $pg.image.repository }}:{{ $pg.image.tag }}"
    imagePullPolicy: {{ $pg.image.pullPolicy }}
    securityContext:
      {{- include "osago.containerSecurityContext" $root | nindent 6 }}
    command: [/bin/bash, -c]
    args:
      - |
        until pg_isready -q -U postgres -h {{ include "osago.postgresHost" $root }} -p {{ $pg.port }}; do
          echo "waiting for PostgreSQL"; sleep 2
        done
    resources:
      requests: {cpu: 10m, memory: 16Mi}
      limits: {cpu: 100m, memory: 64Mi}
  {{- end }}
  {{- if and $kafka $root.Values.kafka.enabled }}
  - name: wait-for-kafka
    image: "{{ $pg.image.repository }}:{{ $pg.image.tag }}"
    imagePullPolicy: {{ $pg.image.pullPolicy }}
    securityContext:
      {{- include "osago.containerSecurityContext" $root | nindent 6 }}
    command: [/bin/bash, -c]
    args:
      - |
        until (exec 3<>/dev/tcp/{{ include "osago.componentName" (list $root "kafka") }}.{{ $root.Release.Namespace }}.svc/{{ $root.Values.kafka.port }}) 2>/dev/null; do
          echo "waiting for Kafka"; sleep 2
        done
    resources:
      requests: {cpu: 10m, memory: 16Mi}
      limits: {cpu: 100m, memory: 64Mi}
  {{- end }}
{{- end }}
{{- end }}
