package main

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// Example runs the quickstart as `go run ./examples/quickstart` does and
// checks what it prints.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := run(ctx, os.Stdout); err != nil {
		fmt.Println("error:", err)
	}
	// Output:
	// serving quickstart.greeter.v1.GreeterService over inproc (in memory)
	// client: SayHello(name="Ada")
	//   server: SayHello(name="Ada") over inproc
	// client: got "hello, Ada"
	// client: SayHello(name="Grace")
	//   server: SayHello(name="Grace") over inproc
	// client: got "hello, Grace"
	// client: SayHello(name="")
	//   server: SayHello(name="") over inproc
	// client: refused as expected: code INVALID_ARGUMENT, message "greeter: name must not be empty"
}
