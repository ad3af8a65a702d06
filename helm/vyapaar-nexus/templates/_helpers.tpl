{{/* Names, labels, images and the shared pod pieces of the chart. */}}

{{- define "vyapaar.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "vyapaar.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Labels of every object; call with (dict "ctx" $ "component" "operator"). */}}
{{- define "vyapaar.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .ctx.Chart.Name .ctx.Chart.Version | replace "+" "_" }}
{{ include "vyapaar.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: vyapaar-nexus
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "vyapaar.selectorLabels" -}}
app.kubernetes.io/name: {{ include "vyapaar.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
{{- if .component }}
app.kubernetes.io/component: {{ .component }}
{{- end }}
{{- end -}}

{{/* repository:tag or repository@digest; call with (dict "image" .Values.x.image "ctx" $). */}}
{{- define "vyapaar.image" -}}
{{- if .image.digest -}}
{{- printf "%s@%s" .image.repository .image.digest -}}
{{- else -}}
{{- printf "%s:%s" .image.repository (default .ctx.Chart.AppVersion .image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "vyapaar.operatorServiceAccount" -}}
{{- default (printf "%s-operator" (include "vyapaar.fullname" .)) .Values.operator.serviceAccount.name -}}
{{- end -}}

{{/* Secret name and key of an infrastructure URL; call with (dict "ctx" $ "component" "rabbitmq"). */}}
{{- define "vyapaar.urlSecretName" -}}
{{- $values := index .ctx.Values .component -}}
{{- if $values.bundled.enabled -}}
{{- printf "%s-%s" (include "vyapaar.fullname" .ctx) .component -}}
{{- else -}}
{{- $values.existingSecret -}}
{{- end -}}
{{- end -}}

{{- define "vyapaar.urlSecretKey" -}}
{{- $values := index .ctx.Values .component -}}
{{- if $values.bundled.enabled -}}url{{- else -}}{{ $values.existingSecretKey }}{{- end -}}
{{- end -}}

{{/* Fail early, with the key to set, when a required piece of infrastructure is missing. */}}
{{- define "vyapaar.validate" -}}
{{- range $component := list "rabbitmq" "postgresql" -}}
{{- $values := index $.Values $component -}}
{{- if and (not $values.bundled.enabled) (not $values.existingSecret) -}}
{{- fail (printf "%s: set %s.existingSecret (a Secret with the connection URL under key %s.existingSecretKey, the production path) or %s.bundled.enabled=true (a demo instance)" $component $component $component $component) -}}
{{- end -}}
{{- if and $values.bundled.enabled $values.existingSecret -}}
{{- fail (printf "%s: set either %s.existingSecret or %s.bundled.enabled, not both" $component $component $component) -}}
{{- end -}}
{{- end -}}
{{- if and .Values.redis.bundled.enabled .Values.redis.existingSecret -}}
{{- fail "redis: set either redis.existingSecret or redis.bundled.enabled, not both" -}}
{{- end -}}
{{- include "vyapaar.validateGateway" . -}}
{{- end -}}

{{/* The gateway's own requirements: Redis, tenants' namespaces for its RoleBindings, unique tenants. */}}
{{- define "vyapaar.validateGateway" -}}
{{- $gw := .Values.gateway -}}
{{- if $gw.enabled -}}
{{- if not (include "vyapaar.redisEnabled" .) -}}
{{- fail "gateway: needs Redis (rate limits, idempotency keys): set redis.existingSecret (a Secret with the Redis URL) or redis.bundled.enabled=true, or gateway.enabled=false" -}}
{{- end -}}
{{- if and .Values.rbac.create (eq $gw.rbac.scope "namespaces") $gw.existingSecret (not $gw.rbac.namespaces) -}}
{{- fail "gateway: with gateway.existingSecret the chart cannot see the tenants' namespaces: list them in gateway.rbac.namespaces (a RoleBinding in each) or set gateway.rbac.scope=cluster" -}}
{{- end -}}
{{- if and $gw.existingSecret $gw.tenants -}}
{{- fail "gateway: set either gateway.tenants (the chart writes the tokens Secret) or gateway.existingSecret (yours), not both" -}}
{{- end -}}
{{- if not $gw.existingSecret -}}
{{- $seen := dict -}}
{{- range $gw.tenants -}}
{{- if hasKey $seen .name -}}
{{- fail (printf "gateway.tenants: the name %q is used twice (tenant names must be unique)" .name) -}}
{{- end -}}
{{- $_ := set $seen .name true -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "vyapaar.gatewayServiceAccount" -}}
{{- default (printf "%s-gateway" (include "vyapaar.fullname" .)) .Values.gateway.serviceAccount.name -}}
{{- end -}}

{{/* The tokens Secret the gateway mounts: the chart's own, or gateway.existingSecret. */}}
{{- define "vyapaar.gatewaySecretName" -}}
{{- default (printf "%s-gateway-tokens" (include "vyapaar.fullname" .)) .Values.gateway.existingSecret -}}
{{- end -}}

{{/* The namespaces the gateway's RoleBindings go to: its tenants' (rendered Secret only) and gateway.rbac.namespaces, sorted, comma-separated. */}}
{{- define "vyapaar.gatewayNamespaces" -}}
{{- $namespaces := .Values.gateway.rbac.namespaces | default list -}}
{{- if not .Values.gateway.existingSecret -}}
{{- range .Values.gateway.tenants -}}
{{- $namespaces = append $namespaces .namespace -}}
{{- end -}}
{{- end -}}
{{- $namespaces | uniq | sortAlpha | join "," -}}
{{- end -}}

{{- define "vyapaar.redisEnabled" -}}
{{- if or .Values.redis.bundled.enabled .Values.redis.existingSecret -}}true{{- end -}}
{{- end -}}

{{/*
A password that is generated once and then kept: the value given, else the one already in
the release's Secret (lookup; empty under `helm template`), else a new random one.
Call with (dict "ctx" $ "secret" NAME "given" VALUE).
*/}}
{{- define "vyapaar.password" -}}
{{- if .given -}}
{{- .given -}}
{{- else -}}
{{- $existing := lookup "v1" "Secret" .ctx.Release.Namespace .secret -}}
{{- if and $existing $existing.data (hasKey $existing.data "password") -}}
{{- index $existing.data "password" | b64dec -}}
{{- else -}}
{{- randAlphaNum 32 -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The /tmp emptyDir every container writes to (root filesystems are read-only). */}}
{{- define "vyapaar.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: 64Mi
{{- end -}}

{{/* The operator's rules on Orders and Events (see rbac.yaml for why each verb). */}}
{{- define "vyapaar.orderRules" -}}
- apiGroups: [vyapaar.dev]
  resources: [orders]
  verbs: [get, list, watch, patch]
- apiGroups: [vyapaar.dev]
  resources: [orders/status]
  verbs: [update]
- apiGroups: [""]
  resources: [events]
  verbs: [create]
{{- end -}}

{{/* The gateway's rules: Orders only, and only what its API does (see gateway.yaml). */}}
{{- define "vyapaar.gatewayRules" -}}
- apiGroups: [vyapaar.dev]
  resources: [orders]
  verbs: [create, get, list, watch, patch]
{{- end -}}

{{- /* OpenTelemetry env of one process (dict "ctx" $ "service" name): nothing when tracing is off. */}}
{{- define "vyapaar.tracingEnv" -}}
{{- with .ctx.Values.tracing.otlpEndpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ . | quote }}
- name: OTEL_SERVICE_NAME
  value: {{ $.service | quote }}
{{- end }}
{{- end }}
