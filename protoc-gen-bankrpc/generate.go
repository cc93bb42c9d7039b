package main

import (
	"fmt"
	"strconv"
	"strings"

	"google.golang.org/protobuf/compiler/protogen"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/pluginpb"
)

const (
	contextPackage = protogen.GoImportPath("context")
	runtimePackage = protogen.GoImportPath("github.com/bankrpc/bankrpc")
)

// generate emits one _bankrpc.pb.go file per input file that declares a
// service.
func generate(gen *protogen.Plugin) error {
	gen.SupportedFeatures = uint64(pluginpb.CodeGeneratorResponse_FEATURE_PROTO3_OPTIONAL |
		pluginpb.CodeGeneratorResponse_FEATURE_SUPPORTS_EDITIONS)
	gen.SupportedEditionsMinimum = descriptorpb.Edition_EDITION_PROTO2
	gen.SupportedEditionsMaximum = descriptorpb.Edition_EDITION_2023
	messages := make(map[protoreflect.FullName]*protogen.Message)
	for _, f := range gen.Files {
		indexMessages(messages, f.Messages)
	}
	for _, f := range gen.Files {
		if !f.Generate || len(f.Services) == 0 {
			continue
		}
		if err := checkUnary(f); err != nil {
			return err
		}
		progress, err := progressMessages(f, messages)
		if err != nil {
			return err
		}
		generateFile(gen, f, progress)
	}
	return nil
}

func indexMessages(into map[protoreflect.FullName]*protogen.Message, ms []*protogen.Message) {
	for _, m := range ms {
		into[m.Desc.FullName()] = m
		indexMessages(into, m.Messages)
	}
}

// The numbers of the (bankrpc.options.v1.method) extension of
// google.protobuf.MethodOptions and of its progress field
// (proto/bankrpc/options/v1/options.proto). The plugin reads them from the
// encoded options rather than linking the generated options package.
const (
	methodOptionsExtension protowire.Number = 51515
	progressField          protowire.Number = 1
)

// progressMessages returns the progress message of each method of f that
// names one (option (bankrpc.options.v1.method).progress), refusing a name
// that is no message, and two methods whose generated functions would have
// the same name.
func progressMessages(f *protogen.File, messages map[protoreflect.FullName]*protogen.Message) (map[*protogen.Method]*protogen.Message, error) {
	out := make(map[*protogen.Method]*protogen.Message)
	seen := make(map[string]*protogen.Method)
	for _, s := range f.Services {
		for _, m := range s.Methods {
			name := progressOption(m.Desc.Options().(*descriptorpb.MethodOptions))
			if name == "" {
				continue
			}
			msg := messages[protoreflect.FullName(name)]
			if msg == nil {
				msg = messages[f.Desc.Package().Append(protoreflect.Name(name))]
			}
			if msg == nil {
				return nil, fmt.Errorf("%s: method %s: progress message %q not found (give a full name, or a message of package %s, in a file this one imports)", f.Desc.Path(), m.Desc.FullName(), name, f.Desc.Package())
			}
			if other := seen[m.GoName]; other != nil {
				return nil, fmt.Errorf("%s: methods %s and %s both report progress: their Report%sProgress functions would clash in package %s", f.Desc.Path(), other.Desc.FullName(), m.Desc.FullName(), m.GoName, f.GoPackageName)
			}
			seen[m.GoName] = m
			out[m] = msg
		}
	}
	return out, nil
}

// progressOption returns the progress field of a method's
// (bankrpc.options.v1.method) option, "" when it has none.
func progressOption(opts *descriptorpb.MethodOptions) string {
	if opts == nil {
		return ""
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(opts)
	if err != nil {
		return ""
	}
	var name string
	for _, ext := range fieldsOf(b, methodOptionsExtension) {
		for _, v := range fieldsOf(ext, progressField) {
			name = string(v) // the last one wins, as in protobuf
		}
	}
	return name
}

// fieldsOf returns the values of the length-delimited fields numbered num
// of the encoded message b.
func fieldsOf(b []byte, num protowire.Number) [][]byte {
	var out [][]byte
	for len(b) > 0 {
		n, typ, l := protowire.ConsumeTag(b)
		if l < 0 {
			return out
		}
		b = b[l:]
		if n == num && typ == protowire.BytesType {
			v, l := protowire.ConsumeBytes(b)
			if l < 0 {
				return out
			}
			out = append(out, v)
			b = b[l:]
			continue
		}
		l = protowire.ConsumeFieldValue(n, typ, b)
		if l < 0 {
			return out
		}
		b = b[l:]
	}
	return out
}

// checkUnary refuses streaming methods instead of dropping them silently.
func checkUnary(f *protogen.File) error {
	for _, s := range f.Services {
		for _, m := range s.Methods {
			var kind string
			switch {
			case m.Desc.IsStreamingClient() && m.Desc.IsStreamingServer():
				kind = "bidirectional streaming"
			case m.Desc.IsStreamingClient():
				kind = "client streaming"
			case m.Desc.IsStreamingServer():
				kind = "server streaming"
			default:
				continue
			}
			return fmt.Errorf("%s: method %s is %s; bankrpc supports unary methods only", f.Desc.Path(), m.Desc.FullName(), kind)
		}
	}
	return nil
}

func generateFile(gen *protogen.Plugin, f *protogen.File, progress map[*protogen.Method]*protogen.Message) {
	g := gen.NewGeneratedFile(f.GeneratedFilenamePrefix+"_bankrpc.pb.go", f.GoImportPath)
	g.P("// Code generated by protoc-gen-bankrpc. DO NOT EDIT.")
	g.P("// source: ", f.Desc.Path())
	g.P()
	g.P("package ", f.GoPackageName)
	g.P()
	g.P("// This is a compile-time assertion that this generated file is compatible")
	g.P("// with the bankrpc runtime it is compiled against.")
	g.P("const _ = ", runtimePackage.Ident("SupportPackageIsVersion1"))
	for _, s := range f.Services {
		generateService(g, f, s, progress)
	}
}

func generateService(g *protogen.GeneratedFile, f *protogen.File, s *protogen.Service, progress map[*protogen.Method]*protogen.Message) {
	name := s.GoName
	clientName := name + "Client"
	serverName := name + "Server"
	unimplemented := "Unimplemented" + serverName
	deprecated := s.Desc.Options().(*descriptorpb.ServiceOptions).GetDeprecated()

	g.P()
	g.P("const (")
	for _, m := range s.Methods {
		g.P(fullMethodConst(s, m), ` = "/`, s.Desc.FullName(), "/", m.Desc.Name(), `"`)
	}
	g.P(")")

	// Client.
	g.P()
	g.P("// ", clientName, " is the client API for the ", s.Desc.FullName(), " service.")
	serviceComment(g, s, deprecated)
	g.P("type ", clientName, " interface {")
	for _, m := range s.Methods {
		methodComment(g, m)
		g.P(m.GoName, "(ctx ", contextPackage.Ident("Context"), ", in *", m.Input.GoIdent, ", opts ...", runtimePackage.Ident("CallOption"), ") (*", m.Output.GoIdent, ", error)")
	}
	for _, m := range s.Methods {
		g.P("// Submit", m.GoName, " submits a ", m.GoName, " call without waiting for its result; Collect", m.GoName)
		g.P("// collects it later, from this process or, over a backend that keeps results")
		g.P("// (AMQP), from a later one with the same client name. See bankrpc.Conn.Submit.")
		g.P("Submit", m.GoName, "(ctx ", contextPackage.Ident("Context"), ", in *", m.Input.GoIdent, ", opts ...", runtimePackage.Ident("CallOption"), ") (", runtimePackage.Ident("CallID"), ", error)")
		g.P("// Collect", m.GoName, " waits for the result of a ", m.GoName, " call submitted with Submit", m.GoName, ".")
		g.P("// See bankrpc.Conn.Collect.")
		g.P("Collect", m.GoName, "(ctx ", contextPackage.Ident("Context"), ", id ", runtimePackage.Ident("CallID"), ", opts ...", runtimePackage.Ident("CallOption"), ") (*", m.Output.GoIdent, ", error)")
	}
	g.P("}")
	g.P()
	g.P("type ", unexport(clientName), " struct {")
	g.P("cc ", runtimePackage.Ident("ClientConnInterface"))
	g.P("}")
	g.P()
	g.P("// New", clientName, " returns the client of the ", s.Desc.FullName(), " service. It sends its")
	g.P("// calls through cc, usually a *bankrpc.Conn over one of the bankrpc backends.")
	deprecationComment(g, deprecated)
	g.P("func New", clientName, "(cc ", runtimePackage.Ident("ClientConnInterface"), ") ", clientName, " {")
	g.P("return &", unexport(clientName), "{cc}")
	g.P("}")
	for _, m := range s.Methods {
		g.P()
		if m.Desc.Options().(*descriptorpb.MethodOptions).GetDeprecated() {
			deprecationComment(g, true)
		}
		g.P("func (c *", unexport(clientName), ") ", m.GoName, "(ctx ", contextPackage.Ident("Context"), ", in *", m.Input.GoIdent, ", opts ...", runtimePackage.Ident("CallOption"), ") (*", m.Output.GoIdent, ", error) {")
		g.P("out := new(", m.Output.GoIdent, ")")
		g.P("if err := c.cc.Invoke(ctx, ", fullMethodConst(s, m), ", in, out, opts...); err != nil {")
		g.P("return nil, err")
		g.P("}")
		g.P("return out, nil")
		g.P("}")
	}
	for _, m := range s.Methods {
		g.P()
		g.P("func (c *", unexport(clientName), ") Submit", m.GoName, "(ctx ", contextPackage.Ident("Context"), ", in *", m.Input.GoIdent, ", opts ...", runtimePackage.Ident("CallOption"), ") (", runtimePackage.Ident("CallID"), ", error) {")
		g.P("return ", runtimePackage.Ident("Submit"), "(ctx, c.cc, ", fullMethodConst(s, m), ", in, opts...)")
		g.P("}")
		g.P()
		g.P("func (c *", unexport(clientName), ") Collect", m.GoName, "(ctx ", contextPackage.Ident("Context"), ", id ", runtimePackage.Ident("CallID"), ", opts ...", runtimePackage.Ident("CallOption"), ") (*", m.Output.GoIdent, ", error) {")
		g.P("out := new(", m.Output.GoIdent, ")")
		g.P("if err := ", runtimePackage.Ident("Collect"), "(ctx, c.cc, id, ", fullMethodConst(s, m), ", out, opts...); err != nil {")
		g.P("return nil, err")
		g.P("}")
		g.P("return out, nil")
		g.P("}")
	}
	for _, m := range s.Methods {
		p := progress[m]
		if p == nil {
			continue
		}
		g.P()
		g.P("// On", m.GoName, "Progress is a call option of ", s.GoName, ".", m.GoName, ": fn receives the")
		g.P("// call's progress (", p.Desc.FullName(), ") reported by the server with Report", m.GoName, "Progress.")
		g.P("// Best-effort: progress may be missed, never the result; fn is called in order")
		g.P("// from a backend goroutine and must not block. See bankrpc.OnProgress.")
		g.P("func On", m.GoName, "Progress(fn func(*", p.GoIdent, ")) ", runtimePackage.Ident("CallOption"), " {")
		g.P("return ", runtimePackage.Ident("OnProgress"), "(fn)")
		g.P("}")
		g.P()
		g.P("// Report", m.GoName, "Progress reports the progress of the ", s.GoName, ".", m.GoName, " call being")
		g.P("// handled in ctx to its caller (On", m.GoName, "Progress): best-effort, the latest wins,")
		g.P("// never persisted. See bankrpc.ReportProgress.")
		g.P("func Report", m.GoName, "Progress(ctx ", contextPackage.Ident("Context"), ", p *", p.GoIdent, ") error {")
		g.P("return ", runtimePackage.Ident("ReportProgress"), "(ctx, p)")
		g.P("}")
	}

	// Server.
	g.P()
	g.P("// ", serverName, " is the server API for the ", s.Desc.FullName(), " service.")
	g.P("// Implementations must embed ", unimplemented, " by value, so that adding a")
	g.P("// method to the service does not break them.")
	serviceComment(g, s, deprecated)
	g.P("type ", serverName, " interface {")
	for _, m := range s.Methods {
		methodComment(g, m)
		g.P(m.GoName, "(", contextPackage.Ident("Context"), ", *", m.Input.GoIdent, ") (*", m.Output.GoIdent, ", error)")
	}
	g.P("mustEmbed", unimplemented, "()")
	g.P("}")
	g.P()
	g.P("// ", unimplemented, " must be embedded by value in implementations of")
	g.P("// ", serverName, ". Its methods answer UNIMPLEMENTED.")
	g.P("type ", unimplemented, " struct{}")
	g.P()
	for _, m := range s.Methods {
		g.P("func (", unimplemented, ") ", m.GoName, "(", contextPackage.Ident("Context"), ", *", m.Input.GoIdent, ") (*", m.Output.GoIdent, ", error) {")
		g.P("return nil, ", runtimePackage.Ident("Errorf"), "(", runtimePackage.Ident("Unimplemented"), ", ", strconv.Quote("method "+string(m.Desc.Name())+" not implemented"), ")")
		g.P("}")
	}
	// The check method is named after the service, like mustEmbed: with one
	// shared name, a type that implements two services would have it twice
	// at the same depth, so it would have none and skip the check.
	check := "testEmbedded" + unimplemented + "ByValue"
	g.P("func (", unimplemented, ") mustEmbed", unimplemented, "() {}")
	g.P("func (", unimplemented, ") ", check, "() {}")
	g.P()
	g.P("// Unsafe", serverName, " may be embedded instead of ", unimplemented, " to opt out")
	g.P("// of forward compatibility: adding a method then breaks the build.")
	g.P("type Unsafe", serverName, " interface {")
	g.P("mustEmbed", unimplemented, "()")
	g.P("}")
	g.P()
	g.P("// Register", serverName, " registers srv with r, usually a *bankrpc.Server.")
	g.P("// It panics when srv is nil or embeds ", unimplemented, " by nil pointer.")
	deprecationComment(g, deprecated)
	g.P("func Register", serverName, "(r ", runtimePackage.Ident("ServiceRegistrar"), ", srv ", serverName, ") {")
	g.P("if t, ok := srv.(interface{ ", check, "() }); ok {")
	g.P(runtimePackage.Ident("CheckEmbeddedByValue"), "(", strconv.Quote(string(s.Desc.FullName())), ", srv, t.", check, ")")
	g.P("}")
	g.P("r.RegisterService(&", name, "_ServiceDesc, srv)")
	g.P("}")

	for _, m := range s.Methods {
		h := "_" + name + "_" + m.GoName + "_Handler"
		g.P()
		g.P("func ", h, "(srv any, ctx ", contextPackage.Ident("Context"), ", dec func(any) error, interceptor ", runtimePackage.Ident("UnaryServerInterceptor"), ") (any, error) {")
		g.P("in := new(", m.Input.GoIdent, ")")
		g.P("if err := dec(in); err != nil {")
		g.P("return nil, err")
		g.P("}")
		g.P("if interceptor == nil {")
		g.P("return srv.(", serverName, ").", m.GoName, "(ctx, in)")
		g.P("}")
		g.P("info := &", runtimePackage.Ident("UnaryServerInfo"), "{")
		g.P("Server: srv,")
		g.P("FullMethod: ", fullMethodConst(s, m), ",")
		g.P("}")
		g.P("handler := func(ctx ", contextPackage.Ident("Context"), ", req any) (any, error) {")
		g.P("return srv.(", serverName, ").", m.GoName, "(ctx, req.(*", m.Input.GoIdent, "))")
		g.P("}")
		g.P("return interceptor(ctx, in, info, handler)")
		g.P("}")
	}

	g.P()
	g.P("// ", name, "_ServiceDesc describes the ", s.Desc.FullName(), " service for Register", serverName, ".")
	g.P("// It is not meant to be used directly or changed.")
	g.P("var ", name, "_ServiceDesc = ", runtimePackage.Ident("ServiceDesc"), "{")
	g.P("ServiceName: ", strconv.Quote(string(s.Desc.FullName())), ",")
	g.P("HandlerType: (*", serverName, ")(nil),")
	g.P("Methods: []", runtimePackage.Ident("MethodDesc"), "{")
	for _, m := range s.Methods {
		g.P("{")
		g.P("MethodName: ", strconv.Quote(string(m.Desc.Name())), ",")
		g.P("Handler: _", name, "_", m.GoName, "_Handler,")
		g.P("},")
	}
	g.P("},")
	g.P("Metadata: ", strconv.Quote(f.Desc.Path()), ",")
	g.P("}")
}

func fullMethodConst(s *protogen.Service, m *protogen.Method) string {
	return s.GoName + "_" + m.GoName + "_FullMethodName"
}

// serviceComment carries the service's proto comment onto a declaration.
func serviceComment(g *protogen.GeneratedFile, s *protogen.Service, deprecated bool) {
	if c := strings.TrimSpace(string(s.Comments.Leading)); c != "" {
		g.P("//")
		g.P(strings.TrimSuffix(s.Comments.Leading.String(), "\n"))
	}
	deprecationComment(g, deprecated)
}

// methodComment carries the method's proto comment onto an interface method.
func methodComment(g *protogen.GeneratedFile, m *protogen.Method) {
	if m.Comments.Leading != "" {
		g.P(strings.TrimSuffix(m.Comments.Leading.String(), "\n"))
	}
	if m.Desc.Options().(*descriptorpb.MethodOptions).GetDeprecated() {
		if m.Comments.Leading != "" {
			g.P("//")
		}
		g.P("// Deprecated: Do not use.")
	}
}

func deprecationComment(g *protogen.GeneratedFile, deprecated bool) {
	if deprecated {
		g.P("//")
		g.P("// Deprecated: Do not use.")
	}
}

func unexport(s string) string {
	return strings.ToLower(s[:1]) + s[1:]
}
