{{/*
Named templates of the AIOS chart. The chart keeps to the template subset that
deploy/helm/render.py implements (see README.md), so it renders with and without helm.
*/}}

{{/* The chart name, overridable with nameOverride. */}}
{{- define "aios.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The resource-name prefix: "<release>-aios", or the release name when it contains "aios". */}}
{{- define "aios.fullname" -}}
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

{{/* A component's resource name, e.g. "<fullname>-web". Argument: (dict "root" $ "component" "web"). */}}
{{- define "aios.componentName" -}}
{{- printf "%s-%s" (include "aios.fullname" .root) .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "aios.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels every resource carries. */}}
{{- define "aios.labels" -}}
helm.sh/chart: {{ include "aios.chart" . }}
{{ include "aios.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: aios
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "aios.selectorLabels" -}}
app.kubernetes.io/name: {{ include "aios.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Labels of one component. Argument: (dict "root" $ "component" "web"). */}}
{{- define "aios.componentLabels" -}}
{{ include "aios.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Selector of one component; a subset of its labels. Argument as above. */}}
{{- define "aios.componentSelectorLabels" -}}
{{ include "aios.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "aios.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "aios.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The control-plane image reference: registry/repository, then @digest or :tag. */}}
{{- define "aios.image" -}}
{{- $repository := .Values.image.repository -}}
{{- if .Values.image.registry -}}
{{- $repository = printf "%s/%s" (trimSuffix "/" .Values.image.registry) .Values.image.repository -}}
{{- end -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" $repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" $repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* The Secret with SECRET_KEY, AIOS_FERNET_KEY, AIOS_ADMIN_PASSWORD. */}}
{{- define "aios.secretName" -}}
{{- default (include "aios.fullname" .) .Values.secrets.existingSecret -}}
{{- end -}}

{{/* Whether the chart renders its own Secret: for application keys, or for inline URLs. */}}
{{- define "aios.chartSecretNeeded" -}}
{{- if or (not .Values.secrets.existingSecret) (include "aios.inlineDatabaseUrl" .) (include "aios.inlineRedisUrl" .) -}}
true
{{- end -}}
{{- end -}}

{{/* "true" when DATABASE_URL comes from externalDatabase.url (stored in the chart's Secret). */}}
{{- define "aios.inlineDatabaseUrl" -}}
{{- if and (not .Values.postgresql.enabled) (not .Values.externalDatabase.existingSecret) -}}
true
{{- end -}}
{{- end -}}

{{- define "aios.inlineRedisUrl" -}}
{{- if and (not .Values.redis.enabled) (not .Values.externalRedis.existingSecret) -}}
true
{{- end -}}
{{- end -}}

{{/* Service and Secret names of the bundled subcharts (they use the same convention). */}}
{{- define "aios.postgresql.host" -}}
{{- printf "%s-postgresql" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "aios.postgresql.secretName" -}}
{{- default (include "aios.postgresql.host" .) .Values.postgresql.auth.existingSecret -}}
{{- end -}}

{{- define "aios.redis.host" -}}
{{- printf "%s-redis" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "aios.redis.secretName" -}}
{{- default (include "aios.redis.host" .) .Values.redis.auth.existingSecret -}}
{{- end -}}

{{- define "aios.webServiceName" -}}
{{- include "aios.componentName" (dict "root" . "component" "web") -}}
{{- end -}}

{{/* ALLOWED_HOSTS: localhost, the web Service's DNS names, the Ingress hosts, config.allowedHosts. */}}
{{- define "aios.allowedHosts" -}}
{{- $svc := include "aios.webServiceName" . -}}
{{- $ns := .Release.Namespace -}}
{{- $hosts := list "localhost" "127.0.0.1" $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.cluster.local" $svc $ns) -}}
{{- if .Values.ingress.enabled -}}
{{- range .Values.ingress.hosts -}}
{{- $hosts = append $hosts .host -}}
{{- end -}}
{{- end -}}
{{- range .Values.config.allowedHosts -}}
{{- $hosts = append $hosts . -}}
{{- end -}}
{{- join "," $hosts -}}
{{- end -}}

{{/* CSRF_TRUSTED_ORIGINS: the Ingress hosts (http and https) and config.csrfTrustedOrigins. */}}
{{- define "aios.csrfTrustedOrigins" -}}
{{- $origins := list -}}
{{- if .Values.ingress.enabled -}}
{{- range .Values.ingress.hosts -}}
{{- $origins = append $origins (printf "https://%s" .host) -}}
{{- $origins = append $origins (printf "http://%s" .host) -}}
{{- end -}}
{{- end -}}
{{- range .Values.config.csrfTrustedOrigins -}}
{{- $origins = append $origins . -}}
{{- end -}}
{{- join "," $origins -}}
{{- end -}}

{{- define "aios.publicUrl" -}}
{{- if .Values.config.publicUrl -}}
{{- .Values.config.publicUrl -}}
{{- else if and .Values.ingress.enabled .Values.ingress.hosts -}}
{{- $first := index .Values.ingress.hosts 0 -}}
{{- printf "%s://%s" (ternary "https" "http" (not (empty .Values.ingress.tls))) $first.host -}}
{{- else -}}
{{- printf "http://%s.%s.svc.cluster.local:%v" (include "aios.webServiceName" .) .Release.Namespace .Values.web.service.port -}}
{{- end -}}
{{- end -}}

{{/*
The environment of every control-plane container. Secret values are only ever referenced
(secretKeyRef), never written into the pod spec.
*/}}
{{- define "aios.env" -}}
- name: AIOS_DATA_DIR
  value: /var/lib/aios
- name: ALLOWED_HOSTS
  value: {{ include "aios.allowedHosts" . | quote }}
{{- with include "aios.csrfTrustedOrigins" . }}
- name: CSRF_TRUSTED_ORIGINS
  value: {{ . | quote }}
{{- end }}
- name: AIOS_PUBLIC_URL
  value: {{ include "aios.publicUrl" . | quote }}
- name: AIOS_LOG_LEVEL
  value: {{ .Values.config.logLevel | quote }}
- name: DEBUG
  value: {{ ternary "1" "0" .Values.config.debug | quote }}
- name: AIOS_TASK_TIME_LIMIT
  value: {{ .Values.config.taskTimeLimit | quote }}
- name: AIOS_SERVE_STATIC
  value: {{ ternary "1" "0" .Values.config.serveStatic | quote }}
- name: AIOS_WAIT_TIMEOUT
  value: {{ .Values.config.waitTimeoutSeconds | quote }}
- name: AIOS_HTTP_PORT
  value: {{ .Values.web.port | quote }}
- name: SECRET_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "aios.secretName" . }}
      key: SECRET_KEY
- name: AIOS_FERNET_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "aios.secretName" . }}
      key: AIOS_FERNET_KEY
{{- if .Values.postgresql.enabled }}
- name: AIOS_POSTGRES_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "aios.postgresql.secretName" . }}
      key: password
- name: DATABASE_URL
  value: {{ printf "postgresql://%s:$(AIOS_POSTGRES_PASSWORD)@%s:5432/%s" .Values.postgresql.auth.username (include "aios.postgresql.host" .) .Values.postgresql.auth.database | quote }}
{{- else if .Values.externalDatabase.existingSecret }}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.externalDatabase.existingSecret }}
      key: {{ .Values.externalDatabase.existingSecretKey }}
{{- else }}
{{- $_ := required "postgresql.enabled is false: set externalDatabase.url or externalDatabase.existingSecret" .Values.externalDatabase.url }}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "aios.fullname" . }}
      key: DATABASE_URL
{{- end }}
{{- if .Values.redis.enabled }}
- name: AIOS_REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "aios.redis.secretName" . }}
      key: password
- name: REDIS_URL
  value: {{ printf "redis://:$(AIOS_REDIS_PASSWORD)@%s:6379/0" (include "aios.redis.host" .) | quote }}
{{- else if .Values.externalRedis.existingSecret }}
- name: REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.externalRedis.existingSecret }}
      key: {{ .Values.externalRedis.existingSecretKey }}
{{- else }}
{{- $_ := required "redis.enabled is false: set externalRedis.url or externalRedis.existingSecret" .Values.externalRedis.url }}
- name: REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "aios.fullname" . }}
      key: REDIS_URL
{{- end }}
{{- if .Values.media.s3.enabled }}
- name: AIOS_S3_BUCKET
  value: {{ required "media.s3.enabled: set media.s3.bucket" .Values.media.s3.bucket | quote }}
{{- with .Values.media.s3.endpointUrl }}
- name: AIOS_S3_ENDPOINT_URL
  value: {{ . | quote }}
{{- end }}
{{- if .Values.media.s3.existingSecret }}
- name: AIOS_S3_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .Values.media.s3.existingSecret }}
      key: {{ .Values.media.s3.accessKeyKey }}
- name: AIOS_S3_SECRET_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .Values.media.s3.existingSecret }}
      key: {{ .Values.media.s3.secretKeyKey }}
{{- end }}
{{- else }}
- name: AIOS_MEDIA_ROOT
  value: {{ .Values.media.mountPath | quote }}
{{- end }}
{{- with .Values.config.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Writable places on a read-only root filesystem. */}}
{{- define "aios.scratchVolumeMounts" -}}
- name: tmp
  mountPath: /tmp
- name: data
  mountPath: /var/lib/aios
{{- end -}}

{{- define "aios.scratchVolumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: 1Gi
- name: data
  emptyDir:
    sizeLimit: 1Gi
{{- end -}}

{{/* The scratch volumes and the shared media volume (web, worker, setup). */}}
{{- define "aios.volumeMounts" -}}
{{ include "aios.scratchVolumeMounts" . }}
{{- if and (not .Values.media.s3.enabled) .Values.media.persistence.enabled }}
- name: media
  mountPath: {{ .Values.media.mountPath }}
{{- end }}
{{- end -}}

{{- define "aios.volumes" -}}
{{ include "aios.scratchVolumes" . }}
{{- if and (not .Values.media.s3.enabled) .Values.media.persistence.enabled }}
- name: media
  persistentVolumeClaim:
    claimName: {{ default (include "aios.componentName" (dict "root" . "component" "media")) .Values.media.persistence.existingClaim }}
{{- end }}
{{- end -}}

{{/* Pod-level settings shared by every control-plane pod. */}}
{{- define "aios.podSpecCommon" -}}
serviceAccountName: {{ include "aios.serviceAccountName" . }}
automountServiceAccountToken: {{ .Values.serviceAccount.automountToken }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
{{- range . }}
  - name: {{ . }}
{{- end }}
{{- end }}
{{- end -}}

{{/* The init container that holds a pod until the database schema is current. */}}
{{- define "aios.waitMigrationsInitContainer" -}}
{{- if .Values.migrations.waitInitContainer }}
initContainers:
  - name: wait-migrations
    image: {{ include "aios.image" . }}
    imagePullPolicy: {{ .Values.image.pullPolicy }}
    args: [wait-migrations]
    env:
      {{- include "aios.env" . | nindent 6 }}
    resources:
      {{- toYaml .Values.migrations.initResources | nindent 6 }}
    securityContext:
      {{- toYaml .Values.containerSecurityContext | nindent 6 }}
    volumeMounts:
      {{- include "aios.scratchVolumeMounts" . | nindent 6 }}
{{- end }}
{{- end -}}

{{/*
A Secret data value (base64): the value given in values.yaml, else the one already in the
cluster, else the generated one. Argument: (dict "value" v "live" b64 "generated" g).
*/}}
{{- define "aios.secretValue" -}}
{{- if .value -}}
{{- .value | b64enc | quote -}}
{{- else if .live -}}
{{- .live | quote -}}
{{- else -}}
{{- .generated | b64enc | quote -}}
{{- end -}}
{{- end -}}
