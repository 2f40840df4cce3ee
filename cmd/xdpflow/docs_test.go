package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestManPage: xdpflow(8) formats without a warning and names every
// command.
func TestManPage(t *testing.T) {
	if _, err := exec.LookPath("groff"); err != nil {
		t.Skip("SKIPPED: no groff to check the man page with (apt-get install groff-base)")
	}
	out, err := exec.Command("groff", "-man", "-ww", "-z", "../../docs/xdpflow.8").CombinedOutput()
	if err != nil || len(out) > 0 {
		t.Fatalf("groff -man -ww: %v: %s", err, out)
	}
	page, err := os.ReadFile("../../docs/xdpflow.8")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range commands {
		if !strings.Contains(string(page), ".B xdpflow "+c) && !strings.Contains(string(page), "\n.B "+c) {
			t.Errorf("the man page does not name command %q", c)
		}
	}
}

// TestBashCompletion: the completion offers the commands, a command's
// words, and the devices after "dev".
func TestBashCompletion(t *testing.T) {
	complete := func(line string) []string {
		t.Helper()
		words := strings.Fields(line)
		if strings.HasSuffix(line, " ") {
			words = append(words, "")
		}
		script := `source ../../scripts/xdpflow.bash-completion
COMP_WORDS=(` + quoteAll(words) + `); COMP_CWORD=$((${#COMP_WORDS[@]}-1))
_xdpflow; printf '%s\n' "${COMPREPLY[@]}"`
		out, err := exec.Command("bash", "-c", script).CombinedOutput()
		if err != nil {
			t.Fatalf("%q: %v: %s", line, err, out)
		}
		return strings.Fields(string(out))
	}
	has := func(got []string, w string) bool {
		for _, g := range got {
			if g == w {
				return true
			}
		}
		return false
	}
	if got := complete("xdpflow en"); !has(got, "enable") || has(got, "status") {
		t.Errorf("xdpflow en: %v", got)
	}
	if got := complete("xdpflow filter "); !has(got, "add") || !has(got, "show") {
		t.Errorf("xdpflow filter: %v", got)
	}
	if got := complete("xdpflow enable dev "); !has(got, "lo") {
		t.Errorf("xdpflow enable dev: %v", got)
	}
	if got := complete("xdpflow enable dev lo "); !has(got, "flows") {
		t.Errorf("xdpflow enable dev lo: %v", got)
	}
}

func quoteAll(words []string) string {
	q := make([]string, len(words))
	for i, w := range words {
		q[i] = "'" + w + "'"
	}
	return strings.Join(q, " ")
}

// TestMakeInstall: make install puts the binary, the man page and the
// completion under DESTDIR.
func TestMakeInstall(t *testing.T) {
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("SKIPPED: no make")
	}
	dest := t.TempDir()
	// A binary of its own: bin/xdpflow is what the selftests run, maybe now.
	bin := filepath.Join(t.TempDir(), "xdpflow")
	out, err := exec.Command("make", "-C", "../..", "install", "DESTDIR="+dest, "PREFIX=/usr", "BIN="+bin).CombinedOutput()
	if err != nil {
		t.Fatalf("make install: %v: %s", err, out)
	}
	for _, f := range []string{"sbin/xdpflow", "share/man/man8/xdpflow.8", "share/bash-completion/completions/xdpflow"} {
		if _, err := os.Stat(filepath.Join(dest, "usr", f)); err != nil {
			t.Errorf("make install: %v", err)
		}
	}
}

// TestMakeDeb: make deb builds a package of what make install installs,
// whose binary runs.
func TestMakeDeb(t *testing.T) {
	if testing.Short() {
		t.Skip("SKIPPED (-short): builds a package; make test runs it")
	}
	if _, err := exec.LookPath("dpkg-deb"); err != nil {
		t.Skip("SKIPPED: no dpkg-deb to build the package with")
	}
	dir := t.TempDir()
	out, err := exec.Command("make", "-C", "../..", "deb", "DEBROOT="+filepath.Join(dir, "root"), "DEBOUT="+dir,
		"BIN="+filepath.Join(dir, "xdpflow"), "DEBVERSION=1.2.3").CombinedOutput()
	if err != nil {
		t.Fatalf("make deb: %v: %s", err, out)
	}
	deb := filepath.Join(dir, "xdpflow_1.2.3_amd64.deb")
	fields, err := exec.Command("dpkg-deb", "-f", deb, "Package", "Version", "Architecture").CombinedOutput()
	if err != nil || string(fields) != "Package: xdpflow\nVersion: 1.2.3\nArchitecture: amd64\n" {
		t.Fatalf("dpkg-deb -f: %v: %q", err, fields)
	}
	list, err := exec.Command("dpkg-deb", "-c", deb).CombinedOutput()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"./usr/sbin/xdpflow", "./usr/lib/systemd/system/xdpflow.service",
		"./usr/share/man/man8/xdpflow.8", "./usr/share/bash-completion/completions/xdpflow"} {
		if !strings.Contains(string(list), f) {
			t.Errorf("the package has no %s:\n%s", f, list)
		}
	}
	x := filepath.Join(dir, "x")
	if out, err := exec.Command("dpkg-deb", "-x", deb, x).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb -x: %v: %s", err, out)
	}
	if out, err := exec.Command(filepath.Join(x, "usr/sbin/xdpflow"), "version").CombinedOutput(); err != nil ||
		!strings.HasPrefix(string(out), "xdpflow ") {
		t.Fatalf("the packaged binary: %v: %s", err, out)
	}
}
