package selftests

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/santhosh-tekuri/jsonschema/v6"
	"sigs.k8s.io/yaml"

	"github.com/xdpflow/xdpflow/internal/testutil"
)

const manifestFile = "../packaging/kubernetes/xdpflow.yaml"

// k8sVersion is the Kubernetes whose API schema the manifest is checked
// against (its OpenAPI v3 document, from the module's source).
const k8sVersion = "v1.34.4"

// daemonSet is the part of a DaemonSet the tests read.
type daemonSet struct {
	Spec struct {
		Template struct {
			Spec struct {
				HostNetwork bool `json:"hostNetwork"`
				Containers  []struct {
					Image   string   `json:"image"`
					Command []string `json:"command"`
					Args    []string `json:"args"`
					Env     []struct {
						Name  string `json:"name"`
						Value string `json:"value"`
					} `json:"env"`
					SecurityContext struct {
						Privileged               *bool `json:"privileged"`
						AllowPrivilegeEscalation *bool `json:"allowPrivilegeEscalation"`
						ReadOnlyRootFilesystem   bool  `json:"readOnlyRootFilesystem"`
						Capabilities             struct {
							Add  []string `json:"add"`
							Drop []string `json:"drop"`
						} `json:"capabilities"`
					} `json:"securityContext"`
					VolumeMounts []struct {
						Name      string `json:"name"`
						MountPath string `json:"mountPath"`
					} `json:"volumeMounts"`
				} `json:"containers"`
				Volumes []struct {
					Name     string `json:"name"`
					HostPath *struct {
						Path string `json:"path"`
					} `json:"hostPath"`
				} `json:"volumes"`
			} `json:"spec"`
		} `json:"template"`
	} `json:"spec"`
}

// daemonSetSchema is apps/v1 DaemonSet's schema from Kubernetes' OpenAPI
// document, made strict as kubeconform -strict makes it: a field the API
// does not have is refused (the API server would drop it, or refuse it
// with fieldValidation=Strict).
func daemonSetSchema(t *testing.T) *jsonschema.Schema {
	t.Helper()
	out, err := exec.Command("go", "mod", "download", "-json", "k8s.io/kubernetes@"+k8sVersion).Output()
	if err != nil {
		t.Fatalf("go mod download k8s.io/kubernetes@%s (its API schema): %v: %s", k8sVersion, err, out)
	}
	var mod struct{ Dir string }
	if err := json.Unmarshal(out, &mod); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join(mod.Dir, "api/openapi-spec/v3/apis__apps__v1_openapi.json"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	doc, err := jsonschema.UnmarshalJSON(f)
	if err != nil {
		t.Fatal(err)
	}
	schemas := doc.(map[string]any)["components"].(map[string]any)["schemas"].(map[string]any)
	for _, s := range schemas {
		strictSchema(s)
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft4) // OpenAPI 3.0's schemas are draft 4's, extended
	const url = "file:///k8s/apps-v1.json"
	if err := c.AddResource(url, doc); err != nil {
		t.Fatal(err)
	}
	sch, err := c.Compile(url + "#/components/schemas/io.k8s.api.apps.v1.DaemonSet")
	if err != nil {
		t.Fatal(err)
	}
	return sch
}

// strictSchema refuses properties an object schema does not name.
func strictSchema(v any) {
	s, ok := v.(map[string]any)
	if !ok {
		return
	}
	if props, ok := s["properties"].(map[string]any); ok {
		if _, set := s["additionalProperties"]; !set {
			s["additionalProperties"] = false
		}
		for _, p := range props {
			strictSchema(p)
		}
	}
	for _, k := range []string{"items", "additionalProperties"} {
		strictSchema(s[k])
	}
	for _, k := range []string{"allOf", "oneOf", "anyOf"} {
		if l, ok := s[k].([]any); ok {
			for _, e := range l {
				strictSchema(e)
			}
		}
	}
}

func validateManifest(sch *jsonschema.Schema, manifest []byte) error {
	j, err := yaml.YAMLToJSON(manifest)
	if err != nil {
		return err
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(j))
	if err != nil {
		return err
	}
	return sch.Validate(inst)
}

// TestDaemonSetManifest: packaging/kubernetes/xdpflow.yaml is a valid
// apps/v1 DaemonSet by Kubernetes' own schema (and the schema, as used,
// refuses a misspelt field, a wrong type and a missing required one), and
// asks for what xdpflow needs and no more: the host's network namespace
// and bpffs, CAP_BPF, CAP_NET_ADMIN and CAP_SYS_ADMIN, not privileged.
func TestDaemonSetManifest(t *testing.T) {
	manifest, err := os.ReadFile(manifestFile)
	if err != nil {
		t.Fatal(err)
	}
	sch := daemonSetSchema(t)
	if err := validateManifest(sch, manifest); err != nil {
		t.Fatalf("%s: %v", manifestFile, err)
	}
	for _, bad := range []struct{ what, from, to string }{
		{"a misspelt field", "hostNetwork: true", "hostNetwrok: true"},
		{"a wrong type", "containerPort: 9560", "containerPort: metrics"},
		{"a missing required field", "  selector:\n    matchLabels:\n      app.kubernetes.io/name: xdpflow\n", ""},
	} {
		m := strings.Replace(string(manifest), bad.from, bad.to, 1)
		if m == string(manifest) {
			t.Fatalf("%s: %q is not in the manifest", bad.what, bad.from)
		}
		if err := validateManifest(sch, []byte(m)); err == nil {
			t.Errorf("the schema takes the manifest with %s", bad.what)
		}
	}

	ds := readDaemonSet(t)
	pod := ds.Spec.Template.Spec
	if !pod.HostNetwork || len(pod.Containers) != 1 {
		t.Fatalf("hostNetwork %v, %d containers: want the host's network namespace and one container", pod.HostNetwork, len(pod.Containers))
	}
	c := pod.Containers[0]
	sc := c.SecurityContext
	if add := slices.Sorted(slices.Values(sc.Capabilities.Add)); !slices.Equal(add, []string{"BPF", "NET_ADMIN", "SYS_ADMIN"}) ||
		!slices.Equal(sc.Capabilities.Drop, []string{"ALL"}) {
		t.Errorf("capabilities add %v drop %v: want BPF, NET_ADMIN and SYS_ADMIN, all others dropped", sc.Capabilities.Add, sc.Capabilities.Drop)
	}
	if sc.Privileged == nil || *sc.Privileged || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Errorf("privileged %v, allowPrivilegeEscalation %v: want both false", sc.Privileged, sc.AllowPrivilegeEscalation)
	}
	if m := podMounts(t, ds); m["/sys/fs/bpf"] != "/sys/fs/bpf" || len(m) != 1 {
		t.Errorf("mounts %v: want the host's bpffs on /sys/fs/bpf, nothing else", m)
	}
	if len(c.Command) > 0 || len(c.Args) == 0 || c.Args[0] != "daemon" {
		t.Errorf("command %q args %q: want the image's entrypoint, running the daemon", c.Command, c.Args)
	}
}

func readDaemonSet(t *testing.T) daemonSet {
	t.Helper()
	manifest, err := os.ReadFile(manifestFile)
	if err != nil {
		t.Fatal(err)
	}
	var ds daemonSet
	if err := yaml.Unmarshal(manifest, &ds); err != nil {
		t.Fatal(err)
	}
	return ds
}

// podMounts is the container's mounts of host paths: container path, host path.
func podMounts(t *testing.T, ds daemonSet) map[string]string {
	pod := ds.Spec.Template.Spec
	m := map[string]string{}
	for _, vm := range pod.Containers[0].VolumeMounts {
		for _, v := range pod.Volumes {
			if v.Name == vm.Name && v.HostPath != nil {
				m[vm.MountPath] = v.HostPath.Path
			}
		}
	}
	return m
}

var envRef = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

// TestContainerImage builds the image (make image), and runs it as the
// DaemonSet says, in a container of the sandbox: the image's entrypoint
// with the manifest's arguments, on a read-only root, with only the
// manifest's capabilities and host mount, in a network namespace standing
// for the host's. Its daemon enables the device it is given and runs the
// device's nft rule in XDP (the frames dropped, nft's counter untouched),
// serves metrics, stops on SIGTERM leaving the rule offloaded in the host's
// bpffs, and without the bpffs mount refuses to start, naming the fix.
func TestContainerImage(t *testing.T) {
	testutil.RequireRoot(t)
	entrypoint, root := buildImage(t, t.TempDir())

	tp := newDropTopo(t)
	mustXdpflow(t, tp.b, "disable", "dev", "b0") // the container enables it
	sb := daemonSetSandbox(t, entrypoint, root, "/run/netns/"+tp.b.Name)

	// Without the host's bpffs: refused, naming the fix.
	noBPFFS := sb
	noBPFFS.Mounts = map[string]string{}
	out, err := runSandbox(t, noBPFFS).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "mount the host's bpffs into it") {
		t.Errorf("without the host's bpffs: %v: %s; want a refusal naming the fix", err, out)
	}

	cmd := runSandbox(t, sb)
	var logBuf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logBuf, &logBuf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
		if t.Failed() {
			t.Logf("the container's log:\n%s", logBuf.String())
		}
	})
	// Outside the container, with the host's xdpflow: the daemon is up.
	waitFor(t, 20*time.Second, "the container's daemon running on b0", func() string {
		out, _ := xdpflow(tp.b, "status")
		return out
	}, func(s string) bool {
		return strings.Contains(s, "daemon: pid") && strings.Contains(s, "nft chain netdev/xf/in (priority 0, 1 rules): mirrored")
	})
	if !strings.Contains(logBuf.String(), `"msg":"enabled b0"`) {
		t.Errorf("the container's daemon did not say it enabled b0")
	}
	frames, markers := udpFrames(tp.a0MAC, 9999, "XFPOD", 20)
	if got := tp.fates(t, frames, markers); count(got, "drop") != len(frames) {
		t.Errorf("%d of %d frames dropped", count(got, "drop"), len(frames))
	}
	if nft := tp.b.MustExec(t, "nft", "list", "chain", "netdev", "xf", "in"); !strings.Contains(nft, "counter packets 0 bytes 0") {
		t.Errorf("nft's counter moved: the frames were not dropped in XDP:\n%s", nft)
	}
	if body := scrape(t, tp.b, "127.0.0.1:9560"); !strings.Contains(body, `xdpflow_rules{dev="b0",source="nft",state="offloaded"} 1`) {
		t.Errorf("metrics from the container:\n%s", body)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("the container's daemon on SIGTERM: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the container's daemon did not stop within 10 s of SIGTERM")
	}
	// What it offloaded stays, pinned in the host's bpffs.
	frames, markers = udpFrames(tp.a0MAC, 9999, "XFGONE", 20)
	if got := tp.fates(t, frames, markers); count(got, "drop") != len(frames) {
		t.Errorf("after the container stopped: %d of %d frames dropped", count(got, "drop"), len(frames))
	}
	if nft := tp.b.MustExec(t, "nft", "list", "chain", "netdev", "xf", "in"); !strings.Contains(nft, "counter packets 0 bytes 0") {
		t.Errorf("after the container stopped, nft's counter moved:\n%s", nft)
	}
}

// buildImage builds the image (make image) in dir and unpacks its root
// file system there: it returns the image's entrypoint and the root.
func buildImage(t *testing.T, dir string) (entrypoint []string, root string) {
	t.Helper()
	archive := filepath.Join(dir, "image.tar")
	out, err := exec.Command("make", "-C", "..", "image", "IMAGE=xdpflow:selftest", "IMAGEOUT="+archive,
		"IMAGEBIN="+filepath.Join(dir, "xdpflow")).CombinedOutput()
	if err != nil {
		t.Fatalf("make image: %v\n%s", err, out)
	}
	tag, _ := name.NewTag("xdpflow:selftest")
	img, err := tarball.ImageFromPath(archive, &tag)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.OS != "linux" || cf.Architecture != "amd64" || !slices.Equal(cf.Config.Entrypoint, []string{"/usr/sbin/xdpflow"}) {
		t.Fatalf("image config: %s/%s entrypoint %q", cf.OS, cf.Architecture, cf.Config.Entrypoint)
	}
	root = filepath.Join(dir, "rootfs")
	if err := extract(mutate.Extract(img), root); err != nil {
		t.Fatal(err)
	}
	return cf.Config.Entrypoint, root
}

// daemonSetSandbox is the container the DaemonSet makes of the image
// (its entrypoint, unpacked in root) on a node whose XDPFLOW_DEVICES is
// b0, in the network namespace at netns.
func daemonSetSandbox(t *testing.T, entrypoint []string, root, netns string) sandbox {
	t.Helper()
	ds := readDaemonSet(t)
	c := ds.Spec.Template.Spec.Containers[0]
	env := map[string]string{"XDPFLOW_DEVICES": "b0"} // the node's own value
	for _, e := range c.Env {
		if _, set := env[e.Name]; !set {
			env[e.Name] = e.Value
		}
	}
	argv := slices.Clone(entrypoint)
	for _, a := range c.Args {
		// As the kubelet expands $(VAR) in args.
		argv = append(argv, envRef.ReplaceAllStringFunc(a, func(ref string) string { return env[ref[2:len(ref)-1]] }))
	}
	var envList []string
	for k, v := range env {
		envList = append(envList, k+"="+v)
	}
	return sandbox{Root: root, ReadOnly: c.SecurityContext.ReadOnlyRootFilesystem, Netns: netns,
		Mounts: podMounts(t, ds), Caps: c.SecurityContext.Capabilities.Add, Argv: argv, Env: envList}
}

// runSandbox is the command that runs sb's container: this test binary, as
// its first process, in a pid and mount namespace of its own.
func runSandbox(t *testing.T, sb sandbox) *exec.Cmd {
	t.Helper()
	spec, err := json.Marshal(sb)
	if err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self)
	cmd.Env = []string{sandboxEnv + "=" + string(spec)}
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNS | syscall.CLONE_NEWPID}
	return cmd
}

// extract writes an image's file system (directories and regular files:
// what make image puts in it) under dir.
func extract(rc io.ReadCloser, dir string) error {
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		p := filepath.Join(dir, filepath.Clean("/"+h.Name))
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(p, os.FileMode(h.Mode)&os.ModePerm); err != nil {
				return err
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				return err
			}
			f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_EXCL, os.FileMode(h.Mode)&os.ModePerm)
			if err != nil {
				return err
			}
			_, err = io.Copy(f, tr)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
		default:
			return errors.New("image: unexpected entry " + h.Name)
		}
	}
}
