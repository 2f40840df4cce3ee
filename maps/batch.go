package maps

import (
	"errors"

	"github.com/cilium/ebpf"
)

// batchChunk is how many elements one batch syscall carries.
const batchChunk = 4096

// batchPut writes elements, in batches where the kernel supports them.
func batchPut[K, V any](m *ebpf.Map, keys []K, vals []V) error {
	return inChunks(len(keys),
		func(i, j int) error { _, err := m.BatchUpdate(keys[i:j], vals[i:j], nil); return err },
		func(k int) error { return m.Put(keys[k], vals[k]) })
}

// batchPutPerCPU sets every CPU's value of each key to v, in batches
// where the kernel supports them.
func batchPutPerCPU[K, V any](m *ebpf.Map, keys []K, v V) error {
	ncpu := ebpf.MustPossibleCPU()
	vals := make([]V, min(len(keys), batchChunk)*ncpu)
	for i := range vals {
		vals[i] = v
	}
	return inChunks(len(keys),
		func(i, j int) error { _, err := m.BatchUpdate(keys[i:j], vals[:(j-i)*ncpu], nil); return err },
		func(k int) error { return m.Put(keys[k], vals[:ncpu]) })
}

// inChunks runs batch over n elements, batchChunk at a time (elements i to
// j), and one on each element of a chunk the map has no batch operation for.
func inChunks(n int, batch func(i, j int) error, one func(k int) error) error {
	for i := 0; i < n; i += batchChunk {
		j := min(i+batchChunk, n)
		err := batch(i, j)
		if err == nil {
			continue
		}
		if !errors.Is(err, ebpf.ErrNotSupported) {
			return err
		}
		for k := i; k < j; k++ {
			if err := one(k); err != nil {
				return err
			}
		}
	}
	return nil
}

// batchDelete removes elements, tolerating ones already gone.
func batchDelete[K any](m *ebpf.Map, keys []K) error {
	for i := 0; i < len(keys); i += batchChunk {
		j := min(i+batchChunk, len(keys))
		if _, err := m.BatchDelete(keys[i:j], nil); err == nil {
			continue
		}
		// A batch stops at the first missing key: fall back to one by one.
		for k := i; k < j; k++ {
			if err := m.Delete(keys[k]); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
				return err
			}
		}
	}
	return nil
}
