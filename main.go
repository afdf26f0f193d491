// Command xlb is an HTTP/1.1 load balancer. Run `xlb help` for its usage.
package main

import (
	"os"

	"github.com/xlbproxy/xlb/server"
)

func main() {
	os.Exit(server.Main(os.Args[1:], os.Stdout, os.Stderr))
}
