package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/xdpflow/xdpflow/flower"
	"github.com/xdpflow/xdpflow/loader"
)

// `xdpflow -b FILE`, as `tc -b`: each line of FILE ("-": standard input) is
// a filter command without the leading "xdpflow"; # starts a comment and a
// backslash at the end of a line continues it. The whole file is parsed
// before anything changes, and each command is checked against the
// device's filters as the commands before it left them. Filters that go
// into TC go there command by command, as tc puts them; XDP-only ones are
// written once every command has succeeded (or before the next command
// that changes TC), in as few table transactions as keep the lookup order
// one process per command would leave: one for a file of adds. A command
// that fails stops the batch, and XDP-only changes not written by then
// are left out. With -force, a command that fails is reported and left
// out, and the others are applied.

// batchCommand is one command of a batch file.
type batchCommand struct {
	where string // FILE:LINE
	cmd   *flower.Command
}

// readBatch reads the commands of a batch file.
func readBatch(name string, in io.Reader, force bool) ([]batchCommand, []error, error) {
	var cmds []batchCommand
	var bad []error
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	n := 0
	var line strings.Builder
	for sc.Scan() {
		n++
		// As tc's getcmdline: # to the end of the line is a comment, and
		// a backslash ending a line without one continues it.
		text, comment := sc.Text(), false
		if i := strings.IndexByte(text, '#'); i >= 0 {
			text, comment = text[:i], true
		}
		if cont, ok := strings.CutSuffix(text, "\\"); ok && !comment {
			line.WriteString(cont)
			line.WriteByte(' ')
			continue
		}
		line.WriteString(text)
		words := strings.Fields(line.String())
		line.Reset()
		if len(words) == 0 {
			continue
		}
		// The line a command ends on, as tc -b counts.
		where := fmt.Sprintf("%s:%d", name, n)
		c, err := parseBatchLine(words)
		if err != nil {
			err = fmt.Errorf("batch %s: %w", where, err)
			if !force {
				return nil, nil, err
			}
			bad = append(bad, err)
			continue
		}
		cmds = append(cmds, batchCommand{where, c})
	}
	if line.Len() > 0 {
		return nil, nil, fmt.Errorf("batch %s:%d: the last line ends in a backslash: a continuation line is missing", name, n)
	}
	if err := sc.Err(); err != nil {
		return nil, nil, fmt.Errorf("batch %s:%d: %w", name, n+1, err)
	}
	return cmds, bad, nil
}

func parseBatchLine(words []string) (*flower.Command, error) {
	if words[0] != "filter" {
		return nil, fmt.Errorf("%q: a batch holds filter commands only (filter add|replace|change|del dev DEV ingress ...)", words[0])
	}
	c, err := flower.ParseCommand(words[1:])
	if err != nil {
		return nil, err
	}
	if c.Verb == "show" {
		return nil, errors.New("filter show: a batch is one change, shown after it: run xdpflow filter show on its own")
	}
	return c, nil
}

func cmdBatch(g globals) error {
	name, in := g.batch, io.Reader(os.Stdin)
	if name != "-" {
		f, err := os.Open(name)
		if err != nil {
			return fmt.Errorf("batch: %w", err)
		}
		defer f.Close()
		in = f
	}
	cmds, failed, err := readBatch(name, in, g.force)
	if err != nil {
		return err
	}
	total := len(cmds) + len(failed)
	p, unlock, err := openPaths(g)
	if err != nil {
		return err
	}
	defer unlock()
	b := &batchEdits{p: p, edits: map[string]*filterEdit{}}
	defer b.close()
	failed, stop := b.do(cmds, g.force, failed)
	applied, commitErrs := b.commit(name, stop != nil)
	return batchOutcome(name, stop, failed, total, applied, commitErrs)
}

// batchEdits are a batch's edits of each device, in the order the batch
// first names the devices.
type batchEdits struct {
	p     loader.Paths
	edits map[string]*filterEdit
	order []*filterEdit
}

func (b *batchEdits) close() {
	for _, e := range b.order {
		e.s.close()
	}
}

// edit is dev's edit, opened at its first command.
func (b *batchEdits) edit(dev string) (*filterEdit, error) {
	if e, ok := b.edits[dev]; ok {
		return e, nil
	}
	s, err := openEnabled(b.p, dev)
	if err != nil {
		return nil, err
	}
	e, err := newFilterEdit(s)
	if err != nil {
		s.close()
		return nil, err
	}
	b.edits[dev] = e
	b.order = append(b.order, e)
	return e, nil
}

// do runs the commands until one fails (stop), or with force all of them,
// adding those that fail to failed.
func (b *batchEdits) do(cmds []batchCommand, force bool, failed []error) (_ []error, stop error) {
	for _, bc := range cmds {
		e, err := b.edit(bc.cmd.Dev)
		if err == nil {
			err = e.do(bc.cmd)
		}
		if err == nil {
			continue
		}
		err = fmt.Errorf("batch %s: %w", bc.where, err)
		if !force {
			return failed, err
		}
		failed = append(failed, err)
	}
	return failed, nil
}

// commit commits each device's edit (discarding what is not written yet),
// and says whether any change was applied.
func (b *batchEdits) commit(name string, discard bool) (applied bool, errs []error) {
	for _, e := range b.order {
		if err := e.commit(discard); err != nil {
			errs = append(errs, fmt.Errorf("batch %s: %s: %w", name, e.s.dev.Name, err))
		}
		applied = applied || e.applied
	}
	return applied, errs
}

// batchOutcome is the batch's error, reporting the commands that failed
// with -force.
func batchOutcome(name string, stop error, failed []error, total int, applied bool, commitErrs []error) error {
	switch {
	case stop != nil && applied:
		return errors.Join(fmt.Errorf("%w; the changes of the lines before it stay, as tc -b leaves them", stop),
			errors.Join(commitErrs...))
	case stop != nil:
		return errors.Join(fmt.Errorf("%w; nothing of the batch was installed", stop), errors.Join(commitErrs...))
	case len(failed) > 0:
		for _, err := range failed {
			fmt.Fprintf(os.Stderr, "xdpflow: %v\n", err)
		}
		return errors.Join(fmt.Errorf("batch %s: %d of %d commands failed (-force: the others were applied)",
			name, len(failed), total), errors.Join(commitErrs...))
	}
	return errors.Join(commitErrs...)
}
