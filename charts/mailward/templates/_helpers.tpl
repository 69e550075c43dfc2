{{- define "mailward.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "mailward.serviceAccountName" -}}
{{- default (include "mailward.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{- define "mailward.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "mailward.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- /* The health endpoint's address as written before :port (IPv6 in brackets). */ -}}
{{- define "mailward.bindHost" -}}
{{- if contains ":" .Values.bindAddress -}}
[{{ .Values.bindAddress }}]
{{- else -}}
{{ .Values.bindAddress }}
{{- end -}}
{{- end -}}

{{- /* The kopf peering object the replicas elect their active one in. */ -}}
{{- define "mailward.peeringName" -}}
{{- default (include "mailward.fullname" .) .Values.peering.name -}}
{{- end -}}
