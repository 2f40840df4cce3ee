package daemon

import (
	"net"
	"os"
)

// sdNotify sends state to the service manager (sd_notify(3)): one
// datagram to the unix socket $NOTIFY_SOCKET names, an abstract one when
// it starts with '@'. Without the variable (not run by systemd with
// Type=notify) it does nothing.
func sdNotify(state string) error {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return nil
	}
	if path[0] == '@' {
		path = "\x00" + path[1:]
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.Write([]byte(state))
	return err
}
