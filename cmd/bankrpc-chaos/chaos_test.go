package main

import (
	"bytes"
	"context"
	"testing"
	"time"
)

// TestChaosShort runs the short variant of the fault suite (make test runs
// it; make chaos runs the full one): every scenario with a few seconds of
// faults, real processes, and the same verdict. Scenarios that cannot run
// on this machine (no rabbitmq-server, not root for the tmpfs) are skipped
// and say why.
func TestChaosShort(t *testing.T) {
	if testing.Short() {
		t.Skip("the fault suite runs bank-server processes and a private RabbitMQ node for ~2 minutes")
	}
	// About two minutes on an idle 2-core machine; booting and restarting
	// the private RabbitMQ node takes minutes when the machine is loaded
	// (go test ./... runs packages in parallel): the bound is generous.
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	var out bytes.Buffer
	results, err := Run(ctx, Options{Short: true}, &out)
	t.Log("\n" + out.String())
	if err != nil {
		t.Fatal(err)
	}
	if len(results) != len(Scenarios()) {
		t.Errorf("%d scenarios ran of %d", len(results), len(Scenarios()))
	}
	for _, r := range results {
		if r.Failed() {
			t.Errorf("scenario %s: %d violations (see the log above)", r.Name, len(r.Violations))
		}
		if r.Skipped == "" && !r.External && (r.Acked == 0 || r.Faults == 0) {
			t.Errorf("scenario %s acknowledged %d operations under %d faults: it tested nothing", r.Name, r.Acked, r.Faults)
		}
	}
}
