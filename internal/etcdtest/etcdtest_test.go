package etcdtest

import (
	"testing"
	"time"
)

// TestCluster: three members take writes, still do with one stopped, and refuse them without a
// quorum; the quorum back, they take writes again.
func TestCluster(t *testing.T) {
	c := Start(t, 3)
	cli := c.Client(t)
	if err := Ping(cli, 5*time.Second); err != nil {
		t.Fatalf("a put to the cluster: %v", err)
	}
	c.Stop(0)
	if err := Ping(cli, 10*time.Second); err != nil {
		t.Fatalf("a put with 2 of 3 members: %v", err)
	}
	c.Stop(1)
	if err := Ping(cli, 2*time.Second); err == nil {
		t.Fatal("a put with 1 of 3 members succeeded")
	}
	c.Restart(1)
	if err := Ping(cli, 10*time.Second); err != nil {
		t.Fatalf("a put after the quorum came back: %v", err)
	}
}
