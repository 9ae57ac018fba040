package main

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/orchestratorchat/hubfarm/orchestration/agents"
)

// The deployment files are configuration nobody runs in CI (no cluster, no
// Docker engine): these tests keep them true to the binary and to the drain.

// serveEnv lists the HUBFARM_* variables serve reads (from its usage text).
func serveEnv(t *testing.T) map[string]bool {
	t.Helper()
	var out, errb bytes.Buffer
	run([]string{"serve", "-h"}, &out, &errb)
	names := map[string]bool{}
	for _, m := range regexp.MustCompile(`\[(HUBFARM_[A-Z0-9_]+)\]`).FindAllStringSubmatch(out.String()+errb.String(), -1) {
		names[m[1]] = true
	}
	if !names["HUBFARM_DRAIN_WINDOW"] || !names["HUBFARM_REDIS"] {
		t.Fatalf("serve -h lists no HUBFARM_ variables:\n%s%s", out.String(), errb.String())
	}
	return names
}

func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(data, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

func mustDuration(t *testing.T, what, s string) time.Duration {
	t.Helper()
	d, err := time.ParseDuration(s)
	if err != nil {
		t.Fatalf("%s = %q: %v", what, s, err)
	}
	return d
}

// loadsAsCatalogue checks that an agent catalogue shipped with a deployment
// is one serve accepts.
func loadsAsCatalogue(t *testing.T, what string, data []byte) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "agents.yaml")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := agents.Load(path, agents.Options{SandboxRoot: t.TempDir()}); err != nil {
		t.Errorf("%s is not a catalogue serve accepts: %v", what, err)
	}
}

type k8sProbe struct {
	HTTPGet struct {
		Path string `yaml:"path"`
	} `yaml:"httpGet"`
}

type k8sEnv struct {
	Name      string `yaml:"name"`
	Value     string `yaml:"value"`
	ValueFrom struct {
		SecretKeyRef *struct {
			Name     string `yaml:"name"`
			Key      string `yaml:"key"`
			Optional bool   `yaml:"optional"`
		} `yaml:"secretKeyRef"`
	} `yaml:"valueFrom"`
}

type k8sDeployment struct {
	Kind     string `yaml:"kind"`
	Metadata struct {
		Name string `yaml:"name"`
	} `yaml:"metadata"`
	Spec struct {
		Replicas int `yaml:"replicas"`
		Template struct {
			Spec struct {
				TerminationGracePeriodSeconds int `yaml:"terminationGracePeriodSeconds"`
				Containers                    []struct {
					Args           []string  `yaml:"args"`
					Env            []k8sEnv  `yaml:"env"`
					ReadinessProbe *k8sProbe `yaml:"readinessProbe"`
					LivenessProbe  *k8sProbe `yaml:"livenessProbe"`
					Lifecycle      struct {
						PreStop struct {
							Sleep struct {
								Seconds int `yaml:"seconds"`
							} `yaml:"sleep"`
						} `yaml:"preStop"`
					} `yaml:"lifecycle"`
					Resources struct {
						Requests map[string]string `yaml:"requests"`
					} `yaml:"resources"`
					VolumeMounts []struct {
						Name      string `yaml:"name"`
						MountPath string `yaml:"mountPath"`
					} `yaml:"volumeMounts"`
				} `yaml:"containers"`
				Volumes []struct {
					Name      string `yaml:"name"`
					ConfigMap struct {
						Name string `yaml:"name"`
					} `yaml:"configMap"`
				} `yaml:"volumes"`
			} `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

// TestK8sManifests: probes on /readyz and /healthz, a grace period that
// covers the preStop sleep and the whole drain, only variables serve reads,
// the Secret and ConfigMap the Deployment refers to, HPA and PDB on the
// Deployment, no session affinity anywhere, and every file in the
// kustomization.
func TestK8sManifests(t *testing.T) {
	dir := filepath.Join("..", "..", "deploy", "k8s")
	known := serveEnv(t)

	var dep k8sDeployment
	readYAML(t, filepath.Join(dir, "deployment.yaml"), &dep)
	if dep.Kind != "Deployment" || len(dep.Spec.Template.Spec.Containers) != 1 {
		t.Fatalf("deployment.yaml: kind %q with %d containers", dep.Kind, len(dep.Spec.Template.Spec.Containers))
	}
	if dep.Spec.Replicas < 2 {
		t.Errorf("replicas = %d; a farm needs at least two nodes to survive one", dep.Spec.Replicas)
	}
	pod := dep.Spec.Template.Spec
	c := pod.Containers[0]
	if len(c.Args) == 0 || c.Args[0] != "serve" {
		t.Errorf("container args %v, want serve", c.Args)
	}
	if c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet.Path != "/readyz" {
		t.Errorf("readiness probe %+v, want GET /readyz", c.ReadinessProbe)
	}
	if c.LivenessProbe == nil || c.LivenessProbe.HTTPGet.Path != "/healthz" {
		t.Errorf("liveness probe %+v, want GET /healthz (a Redis outage must not restart pods)", c.LivenessProbe)
	}
	if c.Resources.Requests["cpu"] == "" || c.Resources.Requests["memory"] == "" {
		t.Errorf("resource requests %v, want cpu and memory", c.Resources.Requests)
	}

	env := map[string]string{}
	secretKeys := map[string]bool{} // "name/key" the pod needs
	for _, e := range c.Env {
		env[e.Name] = e.Value
		if strings.HasPrefix(e.Name, "HUBFARM_") && !known[e.Name] {
			t.Errorf("env %s is not read by hubfarm serve", e.Name)
		}
		if r := e.ValueFrom.SecretKeyRef; r != nil && !r.Optional {
			secretKeys[r.Name+"/"+r.Key] = true
		}
	}
	drain := mustDuration(t, "HUBFARM_DRAIN_WINDOW", env["HUBFARM_DRAIN_WINDOW"])
	preStop := time.Duration(c.Lifecycle.PreStop.Sleep.Seconds) * time.Second
	grace := time.Duration(pod.TerminationGracePeriodSeconds) * time.Second
	if preStop <= 0 {
		t.Errorf("no preStop sleep: the pod would drain before it leaves the Service's endpoints")
	}
	if need := preStop + drain + shutdownSlack; grace < need {
		t.Errorf("terminationGracePeriodSeconds %v < preStop %v + drain window %v + %v: the kubelet would kill a draining pod",
			grace, preStop, drain, shutdownSlack)
	}

	var secret struct {
		Kind     string `yaml:"kind"`
		Metadata struct {
			Name string `yaml:"name"`
		} `yaml:"metadata"`
		StringData map[string]string `yaml:"stringData"`
	}
	readYAML(t, filepath.Join(dir, "secret.yaml"), &secret)
	for k := range secretKeys {
		name, key, _ := strings.Cut(k, "/")
		if secret.Kind != "Secret" || secret.Metadata.Name != name {
			t.Errorf("the pod reads Secret %s; secret.yaml defines %s %s", name, secret.Kind, secret.Metadata.Name)
		} else if _, ok := secret.StringData[key]; !ok {
			t.Errorf("the pod reads key %s of Secret %s; secret.yaml has no such key", key, name)
		}
	}

	var cm struct {
		Kind     string `yaml:"kind"`
		Metadata struct {
			Name string `yaml:"name"`
		} `yaml:"metadata"`
		Data map[string]string `yaml:"data"`
	}
	readYAML(t, filepath.Join(dir, "configmap-agents.yaml"), &cm)
	agentsPath := env["HUBFARM_AGENTS"]
	mounted := false
	for _, v := range pod.Volumes {
		if v.ConfigMap.Name != cm.Metadata.Name {
			continue
		}
		for _, m := range c.VolumeMounts {
			if m.Name == v.Name && filepath.Dir(agentsPath) == filepath.Clean(m.MountPath) {
				mounted = true
			}
		}
	}
	if !mounted {
		t.Errorf("HUBFARM_AGENTS=%s is not in a mount of ConfigMap %s", agentsPath, cm.Metadata.Name)
	}
	if data, ok := cm.Data[filepath.Base(agentsPath)]; !ok {
		t.Errorf("ConfigMap %s has no key %s", cm.Metadata.Name, filepath.Base(agentsPath))
	} else {
		loadsAsCatalogue(t, "configmap-agents.yaml", []byte(data))
	}

	var hpa struct {
		Kind string `yaml:"kind"`
		Spec struct {
			ScaleTargetRef struct {
				Kind string `yaml:"kind"`
				Name string `yaml:"name"`
			} `yaml:"scaleTargetRef"`
			MinReplicas int `yaml:"minReplicas"`
			MaxReplicas int `yaml:"maxReplicas"`
		} `yaml:"spec"`
	}
	readYAML(t, filepath.Join(dir, "hpa.yaml"), &hpa)
	if hpa.Kind != "HorizontalPodAutoscaler" || hpa.Spec.ScaleTargetRef.Kind != "Deployment" || hpa.Spec.ScaleTargetRef.Name != dep.Metadata.Name ||
		hpa.Spec.MinReplicas < 2 || hpa.Spec.MaxReplicas < hpa.Spec.MinReplicas {
		t.Errorf("hpa.yaml: %+v", hpa)
	}

	var pdb struct {
		Kind string `yaml:"kind"`
		Spec struct {
			MaxUnavailable int `yaml:"maxUnavailable"`
			Selector       struct {
				MatchLabels map[string]string `yaml:"matchLabels"`
			} `yaml:"selector"`
		} `yaml:"spec"`
	}
	readYAML(t, filepath.Join(dir, "pdb.yaml"), &pdb)
	if pdb.Kind != "PodDisruptionBudget" || pdb.Spec.MaxUnavailable != 1 || pdb.Spec.Selector.MatchLabels["app"] != "hubfarm" {
		t.Errorf("pdb.yaml: %+v", pdb)
	}

	var svc struct {
		Spec struct {
			SessionAffinity string `yaml:"sessionAffinity"`
		} `yaml:"spec"`
	}
	readYAML(t, filepath.Join(dir, "service.yaml"), &svc)
	if svc.Spec.SessionAffinity != "" && svc.Spec.SessionAffinity != "None" {
		t.Errorf("service.yaml: sessionAffinity %q; the farm needs no sticky sessions", svc.Spec.SessionAffinity)
	}
	var ing struct {
		Metadata struct {
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"metadata"`
	}
	readYAML(t, filepath.Join(dir, "ingress.yaml"), &ing)
	for k := range ing.Metadata.Annotations {
		if strings.Contains(k, "affinity") || strings.Contains(k, "session-cookie") {
			t.Errorf("ingress.yaml: sticky-session annotation %s", k)
		}
	}
	if ing.Metadata.Annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"] != "3600" {
		t.Errorf("ingress.yaml: WebSockets need a long proxy-read-timeout, have %q",
			ing.Metadata.Annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"])
	}

	var kust struct {
		Resources []string `yaml:"resources"`
	}
	readYAML(t, filepath.Join(dir, "kustomization.yaml"), &kust)
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if b := filepath.Base(f); b != "kustomization.yaml" && !slices.Contains(kust.Resources, b) {
			t.Errorf("kustomization.yaml does not apply %s", b)
		}
	}
}

type composeService struct {
	Image           string            `yaml:"image"`
	Command         []string          `yaml:"command"`
	Environment     map[string]string `yaml:"environment"`
	Volumes         []string          `yaml:"volumes"`
	StopGracePeriod string            `yaml:"stop_grace_period"`
}

// TestComposeFarm: Redis with AOF and noeviction, three nodes with distinct
// ids, a stop grace period that covers the drain, only variables serve
// reads, nginx round robin without stickiness and with WebSocket upgrades
// and long timeouts, Prometheus and Grafana with files that exist.
func TestComposeFarm(t *testing.T) {
	dir := filepath.Join("..", "..", "deploy", "compose")
	known := serveEnv(t)
	var compose struct {
		Services map[string]composeService `yaml:"services"`
	}
	readYAML(t, filepath.Join(dir, "docker-compose.yml"), &compose)
	for _, name := range []string{"redis", "node1", "node2", "node3", "nginx", "prometheus", "grafana"} {
		if _, ok := compose.Services[name]; !ok {
			t.Errorf("docker-compose.yml has no service %s", name)
		}
	}

	ids := map[string]bool{}
	for _, name := range []string{"node1", "node2", "node3"} {
		s := compose.Services[name]
		if len(s.Command) == 0 || s.Command[0] != "serve" {
			t.Errorf("%s: command %v, want serve", name, s.Command)
		}
		if i := slices.Index(s.Command, "--node-id"); i >= 0 && i+1 < len(s.Command) {
			ids[s.Command[i+1]] = true
		}
		for k := range s.Environment {
			if strings.HasPrefix(k, "HUBFARM_") && !known[k] {
				t.Errorf("%s: env %s is not read by hubfarm serve", name, k)
			}
		}
		drain := mustDuration(t, name+" HUBFARM_DRAIN_WINDOW", s.Environment["HUBFARM_DRAIN_WINDOW"])
		grace := mustDuration(t, name+" stop_grace_period", s.StopGracePeriod)
		if grace < drain+shutdownSlack {
			t.Errorf("%s: stop_grace_period %v < drain window %v + %v: Docker would kill a draining node", name, grace, drain, shutdownSlack)
		}
	}
	if len(ids) != 3 {
		t.Errorf("node ids %v: three distinct --node-id values expected", ids)
	}

	// Redis: the configuration file mounted is the one checked here.
	redisConf, err := os.ReadFile(filepath.Join(dir, "redis.conf"))
	if err != nil {
		t.Fatal(err)
	}
	conf := map[string]string{}
	for _, line := range strings.Split(string(redisConf), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && !strings.HasPrefix(f[0], "#") {
			conf[f[0]] = f[1]
		}
	}
	if conf["appendonly"] != "yes" || conf["maxmemory-policy"] != "noeviction" {
		t.Errorf("redis.conf: appendonly %q, maxmemory-policy %q; want yes and noeviction", conf["appendonly"], conf["maxmemory-policy"])
	}
	r := compose.Services["redis"]
	if !slices.ContainsFunc(r.Volumes, func(v string) bool { return strings.HasPrefix(v, "./redis.conf:") }) ||
		!slices.ContainsFunc(r.Command, func(a string) bool { return strings.HasSuffix(a, "redis.conf") }) {
		t.Errorf("redis runs without redis.conf: command %v, volumes %v", r.Command, r.Volumes)
	}

	nginx, err := os.ReadFile(filepath.Join(dir, "nginx.conf"))
	if err != nil {
		t.Fatal(err)
	}
	var directives []string // first word of every statement, comments dropped
	for _, line := range strings.Split(string(nginx), "\n") {
		line, _, _ = strings.Cut(line, "#")
		if f := strings.Fields(line); len(f) > 0 {
			directives = append(directives, strings.Join(f, " "))
		}
	}
	all := strings.Join(directives, "\n")
	for _, sticky := range []string{"ip_hash", "hash ", "sticky", "least_conn"} {
		if regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(sticky)).MatchString(all) {
			t.Errorf("nginx.conf: %q: the balancer must be plain round robin, no sticky sessions", strings.TrimSpace(sticky))
		}
	}
	for _, node := range []string{"node1:8080", "node2:8080", "node3:8080"} {
		if !regexp.MustCompile(`(?m)^server ` + regexp.QuoteMeta(node)).MatchString(all) {
			t.Errorf("nginx.conf: no upstream server %s", node)
		}
	}
	for _, want := range []string{"proxy_set_header Upgrade $http_upgrade;", "proxy_set_header Connection $connection_upgrade;", "proxy_read_timeout 1h;"} {
		if !strings.Contains(all, want) {
			t.Errorf("nginx.conf lacks %q", want)
		}
	}

	// Prometheus and Grafana mount files of the repository that exist.
	for _, name := range []string{"prometheus", "grafana", "node1"} {
		for _, v := range compose.Services[name].Volumes {
			src, _, _ := strings.Cut(v, ":")
			if !strings.HasPrefix(src, ".") {
				continue // a named volume
			}
			if _, err := os.Stat(filepath.Join(dir, src)); err != nil {
				t.Errorf("%s mounts %s: %v", name, src, err)
			}
		}
	}
	agentsYAML, err := os.ReadFile(filepath.Join(dir, "agents.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	loadsAsCatalogue(t, "deploy/compose/agents.yaml", agentsYAML)
}
