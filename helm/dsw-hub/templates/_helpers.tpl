{{/* Names and labels shared by every template. */}}

{{- define "dsw.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "dsw.hub" -}}{{ include "dsw.fullname" . }}-hub{{- end -}}
{{- define "dsw.proxy" -}}{{ include "dsw.fullname" . }}-proxy{{- end -}}
{{- define "dsw.proxyApi" -}}{{ include "dsw.fullname" . }}-proxy-api{{- end -}}
{{- define "dsw.proxyPublic" -}}{{ include "dsw.fullname" . }}-proxy-public{{- end -}}

{{/* Selector labels for one component: (dict "root" $ "component" "hub") */}}
{{- define "dsw.selectorLabels" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "dsw.labels" -}}
{{ include "dsw.selectorLabels" . }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end -}}

{{/* The namespace of a workspace: (dict "root" $ "workspace" "vision") */}}
{{- define "dsw.workspaceNamespace" -}}
{{- replace "{workspace}" .workspace .root.Values.singleuser.namespaceTemplate -}}
{{- end -}}

{{/* Generated secrets are kept across upgrades: reuse what the cluster already holds. */}}
{{- define "dsw.secretValue" -}}
{{- $existing := lookup "v1" "Secret" .root.Release.Namespace (include "dsw.hub" .root) -}}
{{- if .value -}}
{{- .value -}}
{{- else if and $existing $existing.data (hasKey $existing.data .key) -}}
{{- index $existing.data .key | b64dec -}}
{{- else -}}
{{- .generate -}}
{{- end -}}
{{- end -}}

{{/* Non-secret settings for jupyterhub_config.py. */}}
{{- define "dsw.settings" -}}
{{- $peers := list (include "dsw.selectorLabels" (dict "root" . "component" "hub") | fromYaml) (include "dsw.selectorLabels" (dict "root" . "component" "proxy") | fromYaml) -}}
{{- $hub := dict "namespace" .Release.Namespace "serviceName" (include "dsw.hub" .) "proxyApiService" (include "dsw.proxyApi" .) "logLevel" .Values.hub.logLevel "authenticator" .Values.hub.authenticator "peerLabels" $peers -}}
{{- $single := deepCopy .Values.singleuser -}}
{{- $_ := set $single "createNamespaces" (empty .Values.rbac.workspaces) -}}
{{- dict "hub" $hub "singleuser" $single | toPrettyJson -}}
{{- end -}}

{{/* The Secret's data (also hashed into the hub pod's checksum annotation). */}}
{{- define "dsw.secretData" -}}
{{- $db := .Values.hub.db -}}
{{- $dbUrl := "sqlite:////srv/jupyterhub/jupyterhub.sqlite" -}}
{{- if eq $db.type "sqlite-memory" }}{{ $dbUrl = "sqlite://" }}{{ end -}}
{{- if eq $db.type "url" }}{{ $dbUrl = $db.url }}{{ end -}}
cookie-secret: {{ include "dsw.secretValue" (dict "root" . "key" "cookie-secret" "value" .Values.hub.cookieSecret "generate" (randAlphaNum 64 | sha256sum)) | b64enc | quote }}
proxy-token: {{ include "dsw.secretValue" (dict "root" . "key" "proxy-token" "value" .Values.proxy.secretToken "generate" (randAlphaNum 64 | sha256sum)) | b64enc | quote }}
db-url: {{ $dbUrl | b64enc | quote }}
{{- end -}}
