{{/*
The labels of every object: meshlane.labels with (dict "root" $ "name" NAME "component" COMPONENT).
app.kubernetes.io/name is also each workload's selector (it never changes).
*/}}
{{- define "meshlane.labels" -}}
app.kubernetes.io/name: {{ .name }}
app.kubernetes.io/instance: {{ .root.Release.Name | quote }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service | quote }}
app.kubernetes.io/component: {{ .component }}
app.kubernetes.io/part-of: meshlane
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | quote }}
{{- end }}

{{/* Every pod: Linux nodes only (the worker tolerates every taint; Windows nodes have no eBPF sockops), plus the component's nodeSelector. */}}
{{- define "meshlane.nodeSelector" -}}
kubernetes.io/os: linux
{{- if .nodeSelector }}
{{ toYaml .nodeSelector }}
{{- end }}
{{- end }}
