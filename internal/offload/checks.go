package offload

import (
	"github.com/xdpflow/xdpflow/loader"
)

// Checks remembers, by device, the answers to the questions every process
// asks before a rule runs in XDP: may XDP forward what arrives on an
// ingress device, can it deliver to a redirect target (the two parts of
// loader.CheckXDPForward), and may a device's rules run in XDP at all
// (CheckDevice). Each answer is netlink and ethtool reads, in the peer's
// namespace too, far more than the rest of a rule change: a run of
// changes asks each device once. Not safe for concurrent use.
type Checks struct {
	ingress map[int]error
	target  map[forwardTarget]error
	device  map[int]error // CheckDevice's answers, by ifindex
	// Base: for questions asked apart from the cache they came from (the
	// daemon asks without its lock), that cache; answers for one since
	// replaced are dropped.
	Base *Checks
}

type forwardTarget struct {
	ifindex int
	tx      bool // back out of the ingress device (XDP_TX)
}

func NewChecks() *Checks {
	return &Checks{ingress: map[int]error{}, target: map[forwardTarget]error{}, device: map[int]error{}}
}

// ForwardChecker refuses a redirect (an nft `fwd`, a flower mirred) XDP
// cannot carry out, asking once per target.
func ForwardChecker(ingress int) func(int) error {
	c := NewChecks()
	return func(target int) error { return c.Forward(ingress, target) }
}

// CheckDevice says why no rule of ifindex may run in XDP, or nil: a hook
// before TC that XDP would overtake, or VLAN tags XDP cannot see.
func CheckDevice(ifindex int) error {
	if err := loader.CheckIngressHooks(ifindex); err != nil {
		return err
	}
	return loader.CheckVLANVisible(ifindex)
}

// Device answers CheckDevice(ifindex).
func (c *Checks) Device(ifindex int) error {
	err, ok := c.device[ifindex]
	if !ok {
		err = CheckDevice(ifindex)
		c.device[ifindex] = err
	}
	return err
}

// Forward answers loader.CheckXDPForward(ingress, target).
func (c *Checks) Forward(ingress, target int) error {
	err, ok := c.ingress[ingress]
	if !ok {
		err = loader.CheckXDPIngress(ingress)
		c.ingress[ingress] = err
	}
	if err != nil {
		return err
	}
	k := forwardTarget{target, target == ingress}
	if err, ok := c.target[k]; ok {
		return err
	}
	err = loader.CheckXDPTarget(k.ifindex, k.tx)
	c.target[k] = err
	return err
}

// IsTarget says whether ifindex was asked about as a redirect target.
func (c *Checks) IsTarget(ifindex int) bool {
	_, a := c.target[forwardTarget{ifindex, false}]
	_, b := c.target[forwardTarget{ifindex, true}]
	return a || b
}

// Questions is every question asked so far, unanswered: to Ask again
// apart from c.
func (c *Checks) Questions() *Checks {
	q := NewChecks()
	for i := range c.ingress {
		q.ingress[i] = nil
	}
	for k := range c.target {
		q.target[k] = nil
	}
	for i := range c.device {
		q.device[i] = nil
	}
	return q
}

// Question adds, unanswered, the questions about ifindex as an ingress
// device, a redirect target and a device whose rules may run in XDP.
func (c *Checks) Question(ifindex int) {
	c.ingress[ifindex] = nil
	c.target[forwardTarget{ifindex, false}] = nil
	c.device[ifindex] = nil
}

// Ask answers every question of c, afresh.
func (c *Checks) Ask() {
	for i := range c.ingress {
		c.ingress[i] = loader.CheckXDPIngress(i)
	}
	for k := range c.target {
		c.target[k] = loader.CheckXDPTarget(k.ifindex, k.tx)
	}
	for i := range c.device {
		c.device[i] = CheckDevice(i)
	}
}

// Take keeps fresh's answers, and says whether one differs from an answer
// c had (which a mirror may have used).
func (c *Checks) Take(fresh *Checks) bool {
	changed := false
	differs := func(was, now error) bool {
		return (was == nil) != (now == nil) || (was != nil && was.Error() != now.Error())
	}
	for i, now := range fresh.ingress {
		if was, ok := c.ingress[i]; ok && differs(was, now) {
			changed = true
		}
		c.ingress[i] = now
	}
	for k, now := range fresh.target {
		if was, ok := c.target[k]; ok && differs(was, now) {
			changed = true
		}
		c.target[k] = now
	}
	for i, now := range fresh.device {
		if was, ok := c.device[i]; ok && differs(was, now) {
			changed = true
		}
		c.device[i] = now
	}
	return changed
}
