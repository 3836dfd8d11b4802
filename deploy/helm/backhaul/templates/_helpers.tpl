{{/* The chart's name and the release's full name. */}}
{{- define "backhaul.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "backhaul.fullname" -}}
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

{{/* The name of one object of a service: (dict "root" $ "name" "billing" "suffix" "api"). */}}
{{- define "backhaul.objectName" -}}
{{- $base := printf "%s-%s" (include "backhaul.fullname" .root) .name -}}
{{- if .suffix -}}{{- $base = printf "%s-%s" $base .suffix -}}{{- end -}}
{{- $base | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "backhaul.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "backhaul.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Labels on everything: (dict "root" $ "name" "billing" "component" "api"). */}}
{{- define "backhaul.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: backhaul
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
{{ include "backhaul.selectorLabels" . }}
{{- end -}}

{{- define "backhaul.selectorLabels" -}}
app.kubernetes.io/name: {{ .name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- if .component }}
app.kubernetes.io/component: {{ .component }}
{{- end }}
{{- end -}}

{{/* The names of the enabled services, sorted, as a YAML list. */}}
{{- define "backhaul.enabledServices" -}}
{{- $names := list -}}
{{- range $name, $svc := .Values.services -}}
{{- $on := true -}}
{{- if and (kindIs "map" $svc) (hasKey $svc "enabled") -}}{{- $on = $svc.enabled -}}{{- end -}}
{{- if $on -}}
{{- $names = append $names $name -}}
{{- end -}}
{{- end -}}
{{- toYaml (sortAlpha $names) -}}
{{- end -}}

{{/* One service's values: serviceDefaults deep-merged with services.<name>, as YAML. */}}
{{- define "backhaul.serviceValues" -}}
{{- $own := deepCopy (default dict (index .root.Values.services .name)) -}}
{{- toYaml (mergeOverwrite (deepCopy .root.Values.serviceDefaults) $own) -}}
{{- end -}}

{{- define "backhaul.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* Refuse values that would start pods which cannot work. */}}
{{- define "backhaul.validate" -}}
{{- $kafka := .Values.kafka -}}
{{- if and (hasPrefix "SASL_" $kafka.securityProtocol) (not $kafka.sasl.mechanism) -}}
{{- fail "kafka.securityProtocol is SASL_*: set kafka.sasl.mechanism (e.g. SCRAM-SHA-512)" -}}
{{- end -}}
{{- if and $kafka.sasl.mechanism (not (hasPrefix "SASL_" $kafka.securityProtocol)) -}}
{{- fail "kafka.sasl.mechanism needs kafka.securityProtocol SASL_SSL (or SASL_PLAINTEXT)" -}}
{{- end -}}
{{- if and $kafka.sasl.mechanism (or (not $kafka.sasl.username) (not $kafka.sasl.existingSecret)) -}}
{{- fail "kafka.sasl needs username and existingSecret (the Secret holding the password)" -}}
{{- end -}}
{{- if and $kafka.tls.caSecret (not (has $kafka.securityProtocol (list "SSL" "SASL_SSL"))) -}}
{{- fail "kafka.tls.caSecret needs kafka.securityProtocol SSL or SASL_SSL" -}}
{{- end -}}
{{- if and .Values.smtp.tls .Values.smtp.starttls -}}
{{- fail "smtp: choose tls (implicit, 465) or starttls (587), not both" -}}
{{- end -}}
{{- if ne (empty .Values.smtp.username) (empty .Values.smtp.existingSecret) -}}
{{- fail "smtp.username and smtp.existingSecret (the password) go together" -}}
{{- end -}}
{{- if and .Values.smtp.caSecret (not (or .Values.smtp.tls .Values.smtp.starttls)) -}}
{{- fail "smtp.caSecret needs smtp.tls or smtp.starttls" -}}
{{- end -}}
{{- if not .Values.jwt.existingSecret -}}
{{- fail "jwt.existingSecret: name the Secret holding JWT_SECRET" -}}
{{- end -}}
{{- end -}}

{{/*
The settings of one service that are not secret, as a YAML map of environment variables:
(dict "root" $ "name" "billing" "svc" $svc). The ConfigMap holds them; the migration Job,
which runs before the ConfigMap exists, gets them inline.
*/}}
{{- define "backhaul.configData" -}}
{{- $v := .root.Values -}}
{{- $data := dict
  "ENVIRONMENT" $v.config.environment
  "HTTP_HOST" "0.0.0.0"
  "HTTP_PORT" (toString $v.containerPort)
  "AUTO_MIGRATE" "false"
  "DATABASE_POOL_SIZE" (toString $v.database.poolSize)
  "KAFKA_BOOTSTRAP_SERVERS" $v.kafka.bootstrapServers
  "KAFKA_SECURITY_PROTOCOL" $v.kafka.securityProtocol
  "KAFKA_TOPIC_PARTITIONS" (toString $v.kafka.topics.partitions)
  "KAFKA_TOPIC_REPLICATION_FACTOR" (toString $v.kafka.topics.replicationFactor)
  "KAFKA_CREATE_TOPICS" (toString $v.kafka.topics.create)
  "OTEL_EXPORTER_OTLP_ENDPOINT" (default "" $v.config.otlpEndpoint)
  "LOG_LEVEL" $v.config.logLevel
  "LOG_JSON" (toString $v.config.logJson)
-}}
{{- if $v.kafka.sasl.mechanism -}}
{{- $_ := set $data "KAFKA_SASL_MECHANISM" $v.kafka.sasl.mechanism -}}
{{- $_ := set $data "KAFKA_SASL_USERNAME" $v.kafka.sasl.username -}}
{{- end -}}
{{- if $v.kafka.tls.caSecret -}}
{{- $_ := set $data "KAFKA_SSL_CAFILE" (printf "/etc/backhaul/kafka-ca/%s" $v.kafka.tls.caKey) -}}
{{- end -}}
{{- if .svc.sendsEmail -}}
{{- $_ := set $data "SMTP_HOST" $v.smtp.host -}}
{{- $_ := set $data "SMTP_PORT" (toString $v.smtp.port) -}}
{{- $_ := set $data "SMTP_TLS" (toString $v.smtp.tls) -}}
{{- $_ := set $data "SMTP_STARTTLS" (toString $v.smtp.starttls) -}}
{{- $_ := set $data "MAIL_FROM" $v.smtp.mailFrom -}}
{{- if $v.smtp.staffEmail -}}
{{- $_ := set $data "STAFF_EMAIL" $v.smtp.staffEmail -}}
{{- end -}}
{{- if $v.smtp.username -}}
{{- $_ := set $data "SMTP_USERNAME" $v.smtp.username -}}
{{- end -}}
{{- if $v.smtp.caSecret -}}
{{- $_ := set $data "SMTP_CA_FILE" (printf "/etc/backhaul/smtp-ca/%s" $v.smtp.caKey) -}}
{{- end -}}
{{- end -}}
{{- range $key, $value := (merge (deepCopy (default dict .svc.config)) (default dict $v.config.extra)) -}}
{{- $_ := set $data $key (toString $value) -}}
{{- end -}}
{{- toYaml $data -}}
{{- end -}}

{{/* Settings read from existing Secrets, as container env entries. */}}
{{- define "backhaul.secretEnv" -}}
{{- $v := .root.Values -}}
{{- $db := default dict .svc.database -}}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ default $v.database.existingSecret $db.existingSecret }}
      key: {{ default (printf $v.database.keyFormat .name) $db.key }}
- name: JWT_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ $v.jwt.existingSecret }}
      key: {{ $v.jwt.key }}
{{- if $v.kafka.sasl.mechanism }}
- name: KAFKA_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $v.kafka.sasl.existingSecret }}
      key: {{ $v.kafka.sasl.passwordKey }}
{{- end }}
{{- if and .svc.sendsEmail $v.smtp.existingSecret }}
- name: SMTP_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $v.smtp.existingSecret }}
      key: {{ $v.smtp.passwordKey }}
{{- end }}
{{- end -}}

{{/* Volumes and mounts of a pod: (dict "root" $ "svc" $svc). */}}
{{- define "backhaul.volumes" -}}
{{- $v := .root.Values -}}
- name: tmp
  emptyDir:
    sizeLimit: 64Mi
{{- if $v.kafka.tls.caSecret }}
- name: kafka-ca
  secret:
    secretName: {{ $v.kafka.tls.caSecret }}
    items:
      - key: {{ $v.kafka.tls.caKey }}
        path: {{ $v.kafka.tls.caKey }}
{{- end }}
{{- if and .svc.sendsEmail $v.smtp.caSecret }}
- name: smtp-ca
  secret:
    secretName: {{ $v.smtp.caSecret }}
    items:
      - key: {{ $v.smtp.caKey }}
        path: {{ $v.smtp.caKey }}
{{- end }}
{{- end -}}

{{- define "backhaul.volumeMounts" -}}
{{- $v := .root.Values -}}
- name: tmp
  mountPath: /tmp
{{- if $v.kafka.tls.caSecret }}
- name: kafka-ca
  mountPath: /etc/backhaul/kafka-ca
  readOnly: true
{{- end }}
{{- if and .svc.sendsEmail $v.smtp.caSecret }}
- name: smtp-ca
  mountPath: /etc/backhaul/smtp-ca
  readOnly: true
{{- end }}
{{- end -}}

{{/*
The pod template of an api or a worker:
(dict "root" $ "name" "billing" "svc" $svc "component" "api").
*/}}
{{- define "backhaul.podTemplate" -}}
{{- $root := .root -}}
{{- $v := $root.Values -}}
{{- $svc := .svc -}}
{{- $probes := $svc.probes -}}
metadata:
  labels:
    {{- include "backhaul.labels" . | nindent 4 }}
    {{- with $svc.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  annotations:
    checksum/config: {{ include "backhaul.configData" . | sha256sum }}
    {{- if $v.metrics.podAnnotations }}
    prometheus.io/scrape: "true"
    prometheus.io/port: {{ $v.containerPort | quote }}
    prometheus.io/path: /metrics
    {{- end }}
    {{- with $svc.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: {{ include "backhaul.serviceAccountName" $root }}
  automountServiceAccountToken: false
  {{- with $v.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- toYaml $v.podSecurityContext | nindent 4 }}
  terminationGracePeriodSeconds: {{ $svc.terminationGracePeriodSeconds }}
  {{- with $svc.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  containers:
    - name: {{ .component }}
      image: {{ include "backhaul.image" $root }}
      imagePullPolicy: {{ $v.image.pullPolicy }}
      args: [{{ .name | quote }}, "serve", "--role", {{ .component | quote }}]
      ports:
        - name: http
          containerPort: {{ $v.containerPort }}
          protocol: TCP
      envFrom:
        - configMapRef:
            name: {{ include "backhaul.objectName" (dict "root" $root "name" .name) }}
      env:
        {{- include "backhaul.secretEnv" . | nindent 8 }}
      startupProbe:
        httpGet: { path: /healthz, port: http }
        {{- toYaml $probes.startup | nindent 8 }}
      livenessProbe:
        httpGet: { path: /healthz, port: http }
        {{- toYaml $probes.liveness | nindent 8 }}
      readinessProbe:
        httpGet: { path: /readyz, port: http }
        {{- toYaml $probes.readiness | nindent 8 }}
      resources:
        {{- toYaml (index $svc .component).resources | nindent 8 }}
      securityContext:
        {{- toYaml $v.securityContext | nindent 8 }}
      volumeMounts:
        {{- include "backhaul.volumeMounts" . | nindent 8 }}
  volumes:
    {{- include "backhaul.volumes" . | nindent 4 }}
  {{- with $svc.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $svc.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $svc.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $svc.topologySpreadConstraints }}
  topologySpreadConstraints:
    {{- tpl (toYaml .) $root | nindent 4 }}
  {{- end }}
{{- end -}}

{{/* Egress every Backhaul pod needs: (dict "root" $ "smtp" true|false "kafka" true|false). */}}
{{- define "backhaul.egressRules" -}}
{{- $egress := .root.Values.networkPolicy.egress -}}
{{- $kinds := list "dns" "postgresql" -}}
{{- if .kafka }}{{ $kinds = concat $kinds (list "kafka" "otlp") }}{{ end -}}
{{- if .smtp }}{{ $kinds = append $kinds "smtp" }}{{ end -}}
{{- range $kind := $kinds }}
{{- $rule := index $egress $kind }}
- ports:
    {{- toYaml $rule.ports | nindent 4 }}
  {{- with $rule.to }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
{{- with $egress.extra }}
{{ toYaml . }}
{{- end }}
{{- end -}}
