{{- define "conclave.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "conclave.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* selector labels of one component: (dict "ctx" . "component" "portal") */}}
{{- define "conclave.selector" -}}
app.kubernetes.io/name: {{ .ctx.Chart.Name }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "conclave.image" -}}
{{ printf "%s:%s" .Values.image.repository .Values.image.tag | quote }}
{{- end -}}

{{- define "conclave.serviceKeySecret" -}}
{{- if .Values.serviceKey.existingSecret -}}
{{ .Values.serviceKey.existingSecret }}
{{- else -}}
{{ include "conclave.fullname" . }}-service-key
{{- end -}}
{{- end -}}

{{/* every cluster manager's address, comma-separated */}}
{{- define "conclave.managers" -}}
{{- $name := printf "%s-cluster-manager" (include "conclave.fullname" .) -}}
{{- $n := 1 -}}
{{- if .Values.clusterManager.election.enabled -}}{{- $n = int .Values.clusterManager.election.replicas -}}{{- end -}}
{{- $list := list -}}
{{- range $i := until $n -}}
{{- $list = append $list (printf "%s-%d.%s:7001" $name $i $name) -}}
{{- end -}}
{{- join "," $list -}}
{{- end -}}

{{/* env every service gets: log filter, gRPC mutual TLS */}}
{{- define "conclave.commonEnv" -}}
- name: RUST_LOG
  value: {{ .Values.logFilter | quote }}
{{- if .Values.tls.enabled }}
- name: CONCLAVE_TLS__CA
  value: /etc/conclave/tls/ca.crt
- name: CONCLAVE_TLS__CERT
  value: /etc/conclave/tls/tls.crt
- name: CONCLAVE_TLS__KEY
  value: /etc/conclave/tls/tls.key
- name: CONCLAVE_TLS__SERVER_NAME
  value: {{ .Values.tls.serverName | quote }}
{{- end }}
{{- end -}}

{{- define "conclave.serviceKeyEnv" -}}
- name: CONCLAVE_SERVICE_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "conclave.serviceKeySecret" . }}
      key: serviceKey
{{- end -}}

{{- define "conclave.tlsMount" -}}
{{- if .Values.tls.enabled }}
- name: tls
  mountPath: /etc/conclave/tls
  readOnly: true
{{- end }}
{{- end -}}

{{- define "conclave.tlsVolume" -}}
{{- if .Values.tls.enabled }}
- name: tls
  secret:
    secretName: {{ required "tls.secret is required with tls.enabled" .Values.tls.secret }}
{{- end }}
{{- end -}}

{{/* liveness and readiness through `<binary> --health-check`: (dict "bin" "portal" "port" 7002) */}}
{{- define "conclave.probes" -}}
readinessProbe:
  exec:
    command: ["/usr/local/bin/{{ .bin }}", "--health-check", "127.0.0.1:{{ .port }}"]
  periodSeconds: 5
  timeoutSeconds: 3
livenessProbe:
  exec:
    command: ["/usr/local/bin/{{ .bin }}", "--health-check", "127.0.0.1:{{ .port }}"]
  initialDelaySeconds: 10
  periodSeconds: 10
  timeoutSeconds: 3
  failureThreshold: 3
{{- end -}}

{{- define "conclave.podSecurity" -}}
securityContext:
  runAsNonRoot: true
  runAsUser: 65532
  runAsGroup: 65532
  fsGroup: 65532
{{- end -}}

{{- define "conclave.containerSecurity" -}}
securityContext:
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  capabilities:
    drop: ["ALL"]
{{- end -}}
