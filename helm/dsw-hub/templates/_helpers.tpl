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

{{/* The image agent pods' selector labels as a label selector ("k=v,k=v"). */}}
{{- define "dsw.agentSelector" -}}
{{- $labels := include "dsw.selectorLabels" (dict "root" . "component" "image-agent") | fromYaml -}}
{{- $pairs := list -}}
{{- range $k, $v := $labels }}{{ $pairs = append $pairs (printf "%s=%s" $k $v) }}{{ end -}}
{{- join "," $pairs -}}
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
{{- $hub := dict "namespace" .Release.Namespace "serviceName" (include "dsw.hub" .) "proxyApiService" (include "dsw.proxyApi" .) "logLevel" .Values.hub.logLevel "peerLabels" $peers -}}
{{- $single := deepCopy .Values.singleuser -}}
{{- $_ := set $single "createNamespaces" (empty .Values.rbac.workspaces) -}}
{{- dict "hub" $hub "singleuser" $single "dsw" (include "dsw.hubSettings" . | fromJson) | toPrettyJson -}}
{{- end -}}

{{/* Fields of spawner_ext.hubconfig.HubSettings (non-secret; the secret ones come from the
     Secret as DSW_* variables). A value left unset keeps HubSettings' default. */}}
{{- define "dsw.hubSettings" -}}
{{- $auth := .Values.hub.authenticator -}}
{{- $dsw := dict "auth" $auth.type "admin_users" $auth.adminUsers "public_url" (include "dsw.publicUrl" .) "subdomain_host" .Values.hub.subdomainHost -}}
{{- if eq $auth.type "custom" }}{{ $_ := set $dsw "authenticator_class" $auth.class }}{{ end -}}
{{- if eq $auth.type "oidc" -}}
{{- $_ := set $dsw "oidc_issuer" $auth.oidc.issuer -}}
{{- $_ := set $dsw "oidc_client_id" $auth.oidc.clientId -}}
{{- $_ := set $dsw "oidc_callback_url" $auth.oidc.callbackUrl -}}
{{- $_ := set $dsw "oidc_role_map" $auth.oidc.roleMap -}}
{{- with $auth.oidc.usernameClaim }}{{ $_ := set $dsw "oidc_username_claim" . }}{{ end -}}
{{- with $auth.oidc.groupsClaim }}{{ $_ := set $dsw "oidc_groups_claim" . }}{{ end -}}
{{- with $auth.oidc.adminGroups }}{{ $_ := set $dsw "oidc_admin_groups" . }}{{ end -}}
{{- end -}}
{{- range $key, $field := dict "idleTimeout" "idle_timeout" "idleMaxMinutes" "idle_max_minutes" "idleCheckSeconds" "idle_check_seconds" "namedServerLimit" "server_limit" "pollInterval" "poll_interval" "reconcileSeconds" "reconcile_seconds" -}}
{{- if hasKey $.Values.hub $key }}{{ $_ := set $dsw $field (index $.Values.hub $key) }}{{ end -}}
{{- end -}}
{{- with .Values.imageAgent }}{{ if .enabled -}}
{{- /* saving on Kubernetes: the service finds the instance's pod and the agent pod on its node */ -}}
{{- $_ := set $dsw "kube_agent_namespace" $.Release.Namespace -}}
{{- $_ := set $dsw "kube_namespace_template" $.Values.singleuser.namespaceTemplate -}}
{{- $_ := set $dsw "kube_agent_selector" (include "dsw.agentSelector" $) -}}
{{- $_ := set $dsw "agent_token_file" "/etc/dsw-agent/token/token" -}}
{{- $_ := set $dsw "image_registry" .registry -}}
{{- $_ := set $dsw "image_registry_tls_verify" (not .registryInsecure) -}}
{{- end }}{{ end -}}
{{- toJson $dsw -}}
{{- end -}}

{{/* The hub's public origin: hub.publicUrl, else hub.subdomainHost, else the first ingress
     host; "" when none is known (the DSW service then takes the hub's from JupyterHub). */}}
{{- define "dsw.publicUrl" -}}
{{- if .Values.hub.publicUrl -}}{{ .Values.hub.publicUrl }}
{{- else if .Values.hub.subdomainHost -}}{{ .Values.hub.subdomainHost }}
{{- else if and .Values.ingress.enabled .Values.ingress.hosts -}}http{{ if .Values.ingress.tls }}s{{ end }}://{{ first .Values.ingress.hosts }}
{{- end -}}
{{- end -}}

{{/* The Secret's data. */}}
{{- define "dsw.secretData" -}}
{{- $db := .Values.hub.db -}}
{{- $dbUrl := "sqlite:////srv/jupyterhub/jupyterhub.sqlite" -}}
{{- if eq $db.type "sqlite-memory" }}{{ $dbUrl = "sqlite://" }}{{ end -}}
{{- if eq $db.type "url" }}{{ $dbUrl = $db.url }}{{ end -}}
cookie-secret: {{ include "dsw.secretValue" (dict "root" . "key" "cookie-secret" "value" .Values.hub.cookieSecret "generate" (randAlphaNum 64 | sha256sum)) | b64enc | quote }}
proxy-token: {{ include "dsw.secretValue" (dict "root" . "key" "proxy-token" "value" .Values.proxy.secretToken "generate" (randAlphaNum 64 | sha256sum)) | b64enc | quote }}
db-url: {{ $dbUrl | b64enc | quote }}
{{- $auth := .Values.hub.authenticator }}
{{- if eq $auth.type "embedded" }}
admin-password: {{ include "dsw.secretValue" (dict "root" . "key" "admin-password" "value" "" "generate" (randAlphaNum 40)) | b64enc | quote }}
{{- end }}
{{- if and (eq $auth.type "oidc") $auth.oidc.clientSecret }}
oidc-client-secret: {{ $auth.oidc.clientSecret | b64enc | quote }}
{{- end }}
{{- with .Values.hub.adminToken }}
admin-token: {{ . | b64enc | quote }}
{{- end }}
{{- with .Values.hub.extraConfig }}
extra_config.py: {{ . | b64enc | quote }}
{{- end }}
{{- end -}}
