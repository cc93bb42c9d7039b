// Command protoc-gen-bankrpc is a protoc and buf plugin that generates bankrpc
// client stubs and server interfaces for the services of .proto files.
//
// Use it next to protoc-gen-go, with the same output directory and options:
//
//	protoc --go_out=. --go_opt=paths=source_relative \
//	       --bankrpc_out=. --bankrpc_opt=paths=source_relative svc.proto
//
// For every file that declares a service it writes <file>_bankrpc.pb.go in
// the Go package of protoc-gen-go's output. Only unary methods are supported;
// a streaming method is refused with an error that names it.
package main

import (
	"flag"
	"fmt"
	"os"

	"google.golang.org/protobuf/compiler/protogen"
)

// version is printed by --version and nowhere in the generated code, so that
// output does not change with the plugin's version.
const version = "0.1.0"

func main() {
	if len(os.Args) == 2 && (os.Args[1] == "--version" || os.Args[1] == "-version") {
		fmt.Printf("protoc-gen-bankrpc %s\n", version)
		return
	}
	if len(os.Args) > 1 {
		fmt.Fprintf(os.Stderr, "protoc-gen-bankrpc: this is a protoc plugin; run it through protoc or buf (--bankrpc_out), or with --version\n")
		os.Exit(2)
	}
	var flags flag.FlagSet
	protogen.Options{ParamFunc: flags.Set}.Run(generate)
}
