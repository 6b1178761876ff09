{{/* Chart name, overridable. */}}
{{- define "paysys.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Base name of the operator's objects: the release name, prefixed with the chart name unless
the release name already contains it. Truncated to 63 characters (DNS label).
*/}}
{{- define "paysys.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "paysys.operatorName" -}}
{{- printf "%s-operator" (include "paysys.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "paysys.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object of the chart. */}}
{{- define "paysys.labels" -}}
helm.sh/chart: {{ include "paysys.chart" . }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: paysys
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}

{{/* Selector labels of the operator's pods (immutable once installed). */}}
{{- define "paysys.operatorSelectorLabels" -}}
app.kubernetes.io/name: paysys-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "paysys.operatorLabels" -}}
{{ include "paysys.labels" . }}
{{ include "paysys.operatorSelectorLabels" . }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "paysys.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "paysys.operatorName" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Registry and path every paysys image name is appended to (spec.image.repository). */}}
{{- define "paysys.imageRepository" -}}
{{- printf "%s/%s" (trimSuffix "/" .Values.image.registry) (trimAll "/" .Values.image.repository) }}
{{- end }}

{{/* The tag of every image: image.tag, else the chart's appVersion (the workspace version). */}}
{{- define "paysys.imageTag" -}}
{{- default .Chart.AppVersion .Values.image.tag }}
{{- end }}

{{/*
One paysys image, (dict "root" $ "name" "payments-api"): by digest when image.digests has one
(a digest wins over the tag), else by tag.
*/}}
{{- define "paysys.image" -}}
{{- $root := .root }}
{{- $digest := get $root.Values.image.digests .name }}
{{- if $digest }}
{{- printf "%s/%s@%s" (include "paysys.imageRepository" $root) .name $digest }}
{{- else }}
{{- printf "%s/%s:%s" (include "paysys.imageRepository" $root) .name (include "paysys.imageTag" $root) }}
{{- end }}
{{- end }}

{{/* Namespace of the PaymentSystem created from values. */}}
{{- define "paysys.paymentSystemNamespace" -}}
{{- default .Release.Namespace .Values.paymentSystem.namespace }}
{{- end }}

{{/*
Labels the operator puts on the pods of a PaymentSystem's components (see the operator's
build code); the localAccess Service and the PodMonitor select on them.
*/}}
{{- define "paysys.managedByOperator" -}}
app.kubernetes.io/managed-by: paysys-operator
{{- end }}

{{- define "paysys.apiPodSelector" -}}
{{ include "paysys.managedByOperator" . }}
app.kubernetes.io/name: payments-api
app.kubernetes.io/instance: {{ .Values.paymentSystem.name }}
{{- end }}

{{/* The payments API Service the operator creates for the PaymentSystem. */}}
{{- define "paysys.apiServiceName" -}}
{{- printf "%s-payments-api" .Values.paymentSystem.name }}
{{- end }}

{{/* The leader-election Lease, one per release. */}}
{{- define "paysys.leaseName" -}}
{{- include "paysys.operatorName" . }}
{{- end }}

{{/*
A security context from values, (dict "root" $ "context" .Values.operator.podSecurityContext):
as given with securityMode Fixed; without runAsUser, runAsGroup and fsGroup with
OpenShiftRestricted, whose restricted-v2 SCC assigns them (and refuses ids outside the
namespace's range).
*/}}
{{- define "paysys.securityContext" -}}
{{- $context := deepCopy (.context | default dict) }}
{{- if eq .root.Values.securityMode "OpenShiftRestricted" }}
{{- $context = omit $context "runAsUser" "runAsGroup" "fsGroup" }}
{{- end }}
{{- toYaml $context }}
{{- end }}

{{/*
The spec of the PaymentSystem created from values, as YAML: paymentSystem.spec with what it
leaves unset filled in from the chart's values, so that one value points the operator and this
system's pods at the same registry (image, imagePullSecrets, digests) and the same security
mode (securityMode). The PaymentSystem and the helm test pod (its image) both read it.
*/}}
{{- define "paysys.paymentSystemSpec" -}}
{{- $spec := deepCopy (.Values.paymentSystem.spec | default dict) }}
{{- $image := dict "repository" (include "paysys.imageRepository" .) "tag" (include "paysys.imageTag" .) "pullPolicy" .Values.image.pullPolicy }}
{{- if .Values.imagePullSecrets }}
{{- $names := list }}
{{- range .Values.imagePullSecrets }}{{ $names = append $names .name }}{{ end }}
{{- $_ := set $image "pullSecrets" $names }}
{{- end }}
{{- $_ := set $spec "image" (mergeOverwrite $image (get $spec "image" | default dict)) }}
{{- /* The chart's securityMode is the system's too, unless its spec chooses. */}}
{{- if eq .Values.securityMode "OpenShiftRestricted" }}
{{- $security := get $spec "securityContext" | default dict }}
{{- if not (hasKey $security "mode") }}
{{- range $field := list "runAsUser" "runAsGroup" "fsGroup" }}
{{- if hasKey $security $field }}
{{- fail (printf "securityMode=OpenShiftRestricted leaves ids to OpenShift, but paymentSystem.spec.securityContext.%s fixes one: drop it (or set paymentSystem.spec.securityContext.mode=Fixed to keep it)" $field) }}
{{- end }}
{{- end }}
{{- $_ := set $security "mode" "OpenShiftRestricted" }}
{{- $_ := set $spec "securityContext" $security }}
{{- end }}
{{- end }}
{{- /* A digest pins a component through its full image reference (spec.<component>.image). */}}
{{- range $field, $name := dict "paymentsApi" "payments-api" "riskEngine" "risk-engine" "dataFeed" "paysys-feed" }}
{{- if and (get $.Values.image.digests $name) (or (ne $field "dataFeed") (hasKey $spec "dataFeed")) }}
{{- $component := get $spec $field | default dict }}
{{- if not (get $component "image") }}
{{- $_ := set $component "image" (include "paysys.image" (dict "root" $ "name" $name)) }}
{{- $_ := set $spec $field $component }}
{{- end }}
{{- end }}
{{- end }}
{{- toYaml $spec }}
{{- end }}
