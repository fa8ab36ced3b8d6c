{{/*
Chart name, truncated to 63 characters (the DNS label limit of Kubernetes names).
*/}}
{{- define "dhan-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name: the release name, suffixed with the chart name unless the release name
already contains it. Truncated to 63 characters.
*/}}
{{- define "dhan-operator.fullname" -}}
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

{{/*
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "dhan-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels on every object of the release.
*/}}
{{- define "dhan-operator.labels" -}}
helm.sh/chart: {{ include "dhan-operator.chart" . }}
{{ include "dhan-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: operator
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Labels that select the operator's pods: must never change between upgrades (a Deployment's selector
is immutable).
*/}}
{{- define "dhan-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "dhan-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Name of the operator's ServiceAccount.
*/}}
{{- define "dhan-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "dhan-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The operator image reference; the tag defaults to the chart's appVersion.
*/}}
{{- define "dhan-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/*
Whether the operator runs with leader election: forced by leaderElection.enabled, and always with
more than one replica (only the leader may reconcile: a mint kills the token the other replica's
accounts hold).
*/}}
{{- define "dhan-operator.leaderElect" -}}
{{- if or .Values.leaderElection.enabled (gt (int .Values.replicaCount) 1) }}true{{ end }}
{{- end }}

{{/*
Name of the leader-election Lease: leaderElection.leaseName, else one per release
(<fullname>-leader), so two releases never contend for one Lease. The Deployment passes it as
--leader-elect-lease and the leader-election Role allows get and patch on it alone.
*/}}
{{- define "dhan-operator.leaseName" -}}
{{- if .Values.leaderElection.leaseName }}
{{- .Values.leaderElection.leaseName }}
{{- else }}
{{- printf "%s-leader" (include "dhan-operator.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/*
This install's name in client-ID claims: stable across upgrades and replicas, unique per release.
*/}}
{{- define "dhan-operator.installId" -}}
{{- .Values.clientClaims.installId | default (printf "%s/%s" .Release.Namespace (include "dhan-operator.fullname" .)) }}
{{- end }}

{{/*
The name of this install's heartbeat (a DhanOperatorInstall): a hash of its install ID, as the
operator derives it.
*/}}
{{- define "dhan-operator.installObject" -}}
{{- printf "install-%s" (sha256sum (printf "dhan-operator-install:%s" (include "dhan-operator.installId" .)) | trunc 16) }}
{{- end }}

{{/*
A probe from values, switched to HTTPS when the metrics port serves TLS.
*/}}
{{- define "dhan-operator.probe" -}}
{{- $probe := deepCopy .probe }}
{{- if and .secure $probe.httpGet }}
{{- $_ := set $probe.httpGet "scheme" "HTTPS" }}
{{- end }}
{{- toYaml $probe }}
{{- end }}

{{/*
The operator's RBAC rules in its watch scope, shared by the ClusterRole and the single-namespace
Role. Each rule says why the operator needs it; the chart's README has the same as a table.
*/}}
{{- define "dhan-operator.rules" -}}
# DhanAccounts are the primary resource: the controller lists and watches them and reads each one.
- apiGroups: ["dhan-operator.dev"]
  resources: ["dhanaccounts"]
  verbs: ["get", "list", "watch"]
# Status is written with server-side apply on the status subresource, never the spec.
- apiGroups: ["dhan-operator.dev"]
  resources: ["dhanaccounts/status"]
  verbs: ["patch"]
# The output Secret and login Jobs carry a controller owner reference with blockOwnerDeletion; where
# the OwnerReferencesPermissionEnforcement admission plugin is on (e.g. OpenShift), setting that
# requires update on the owner's finalizers subresource.
- apiGroups: ["dhan-operator.dev"]
  resources: ["dhanaccounts/finalizers"]
  verbs: ["update"]
# Secrets: get the credentials Secrets and the output token Secret of each account; list and watch
# their metadata only, and only in namespaces that hold a DhanAccount (a changed credential retries
# a Failed account); write the output Secret with server-side apply (create + patch). Delete: a
# renamed spec.secretName moves the token to the new Secret and removes the old one (only the
# account's own, checked by UID). No update.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# Events for refreshes, failures and conflicts (events.k8s.io/v1; patch aggregates repeats).
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- if .Values.notifications.enabled }}
# Notifications: watch DhanNotifiers and record in their status what was last sent (so a restart
# does not repeat it). Their Telegram/webhook Secrets are read with the Secret rights above.
- apiGroups: ["dhan-operator.dev"]
  resources: ["dhannotifiers"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["dhan-operator.dev"]
  resources: ["dhannotifiers/status"]
  verbs: ["patch"]
{{- end }}
{{- if .Values.browserLogin.enabled }}
# Browser logins run as Jobs in the account's namespace, owned by the DhanAccount: create them,
# watch them finish (metadata only), delete a stuck or superseded one.
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["create", "get", "list", "watch", "delete"]
# The login Job hands back its result in its pod's termination message: read the pods (and watch
# their metadata, so a finished login counts even while its Chromium sidecar lingers).
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch"]
# Each account's login Pods are fenced by a NetworkPolicy the operator applies (server-side apply)
# before a login: DNS and HTTPS out only, no metadata or in-cluster addresses, nothing in.
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["get", "create", "patch"]
{{- end }}
{{- if .Values.rolloutRestarts.enabled }}
# spec.rolloutRestartTargets: after a new token, restart the workloads that read it as env vars (a
# patch of the pod template's dhan-operator.dev/token-hash annotation) — only those whose own
# dhan-operator.dev/restart-on-refresh-of annotation names the account, which the get checks.
- apiGroups: ["apps"]
  resources: ["deployments", "statefulsets", "daemonsets"]
  verbs: ["get", "patch"]
{{- end }}
{{- if .Values.podSync.enabled }}
# After a new token, tell the running Pods that mount the output Secret to sync now (a patch of
# their dhan-operator.dev/token-synced annotation; the kubelet then rewrites the volume) — only
# Pods labelled dhan-operator.dev/sync-on-refresh (the list's selector) whose own
# dhan-operator.dev/sync-on-refresh-of annotation names the account.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "patch"]
{{- end }}
{{- end }}

{{/*
The watched namespaces, comma-separated (empty: all): watchNamespaces, else watchNamespace.
*/}}
{{- define "dhan-operator.watchNamespaces" -}}
{{- if and .Values.watchNamespace .Values.watchNamespaces }}
{{- fail "set watchNamespace or watchNamespaces, not both" }}
{{- end }}
{{- if .Values.watchNamespaces }}
{{- join "," (uniq .Values.watchNamespaces) }}
{{- else }}
{{- .Values.watchNamespace }}
{{- end }}
{{- end }}
