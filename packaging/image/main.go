// Command image builds xdpflow's container image without a container
// engine: one layer holding the static binary and its man page on an empty
// base, written as an image archive that `docker load` and `podman load`
// read (`crane push` sends it to a registry). make image runs it.
//
//	go run ./packaging/image -bin build/image/xdpflow -man docs/xdpflow.8 -tag xdpflow:VERSION -o build/xdpflow-image.tar
package main

import (
	"archive/tar"
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

func main() {
	bin := flag.String("bin", "", "the xdpflow binary, statically linked (CGO_ENABLED=0)")
	man := flag.String("man", "", "xdpflow(8)")
	tag := flag.String("tag", "xdpflow:latest", "the image's name and tag")
	out := flag.String("o", "", "the image archive to write")
	flag.Parse()
	if *bin == "" || *man == "" || *out == "" || flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "usage: image -bin FILE -man FILE [-tag NAME:TAG] -o FILE")
		os.Exit(2)
	}
	if err := build(*bin, *man, *tag, *out); err != nil {
		fmt.Fprintf(os.Stderr, "image: %v\n", err)
		os.Exit(1)
	}
}

func build(bin, man, tag, out string) error {
	ref, err := name.NewTag(tag)
	if err != nil {
		return err
	}
	layer, err := rootLayer(bin, man)
	if err != nil {
		return err
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	cf.Created = v1.Time{Time: time.Unix(0, 0).UTC()} // the same inputs, the same image
	cf.Config.Entrypoint = []string{"/usr/sbin/xdpflow"}
	cf.Config.Cmd = []string{"daemon", "--log-format", "json"}
	cf.Config.User = "0"
	cf.Config.Labels = map[string]string{
		"org.opencontainers.image.title":       "xdpflow",
		"org.opencontainers.image.description": "TC flower filters and nftables netdev rules in XDP",
		"org.opencontainers.image.version":     ref.TagStr(),
	}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return err
	}
	return tarball.WriteToFile(out, ref, img)
}

// rootLayer is the image's one layer: /usr/sbin/xdpflow and its man page,
// with the directories above them, owned by root, dated at the epoch.
func rootLayer(bin, man string) (v1.Layer, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, dir := range []string{"usr/", "usr/sbin/", "usr/share/", "usr/share/man/", "usr/share/man/man8/", "tmp/"} {
		mode := int64(0o755)
		if dir == "tmp/" {
			mode = 0o1777
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: dir, Mode: mode, ModTime: time.Unix(0, 0)}); err != nil {
			return nil, err
		}
	}
	for _, f := range []struct {
		src, dst string
		mode     int64
	}{{bin, "usr/sbin/xdpflow", 0o755}, {man, "usr/share/man/man8/xdpflow.8", 0o644}} {
		b, err := os.ReadFile(f.src)
		if err != nil {
			return nil, err
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: f.dst, Mode: f.mode, Size: int64(len(b)),
			ModTime: time.Unix(0, 0)}); err != nil {
			return nil, err
		}
		if _, err := tw.Write(b); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	data := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil })
}
