// Package greeter is a one-method gRPC service for the xDS example and
// tests: SayHello answers with the name of the server that took the call,
// so a client can count where its calls went. Its messages are the
// well-known StringValue, so it needs no generated code.
package greeter

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Method is the full name of the service's one method.
const Method = "/scrimp.example.Greeter/SayHello"

// KeyHeader is the request header a keyed client puts its key in (an
// account id, say); an application that balances by "header:x-account-id"
// keeps each key on one backend.
const KeyHeader = "x-account-id"

// Register adds the greeter, answering as name, to s.
func Register(s *grpc.Server, name string) {
	s.RegisterService(&grpc.ServiceDesc{
		ServiceName: "scrimp.example.Greeter",
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{{
			MethodName: "SayHello",
			Handler: func(_ any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
				in := new(wrapperspb.StringValue)
				if err := dec(in); err != nil {
					return nil, err
				}
				return wrapperspb.String(name), nil
			},
		}},
	}, struct{}{})
}

// SayHello calls the greeter over conn, with key (if not empty) in
// KeyHeader, and returns the name of the server that answered.
func SayHello(ctx context.Context, conn grpc.ClientConnInterface, key string, opts ...grpc.CallOption) (string, error) {
	if key != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, KeyHeader, key)
	}
	out := new(wrapperspb.StringValue)
	if err := conn.Invoke(ctx, Method, wrapperspb.String(key), out, opts...); err != nil {
		return "", err
	}
	return out.GetValue(), nil
}
