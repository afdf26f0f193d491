// Package config is what `xlb run` and `xlb dataplane` serve: the Config type, every zero field of
// which means a documented default, and the YAML configuration file that makes one (Parse, Load),
// checked whole before anything is served. A file's errors name the line and the key
// ("xlb.yaml:9: backend_sets[0].backends[1].weight: want 0 (meaning 1) to 1000000, got 2000000"),
// at most 20 of them, sorted.
//
// # One validator
//
// The decoder checks the form of a backend set: keys known, none twice, required keys there,
// values of the right type (a weight an integer of 32 bits, an address host:port with a numeric
// port, a duration one, a status "200" or "200-399"), names spelled as the wire's enums are
// (server/backendset.ParsePolicy, ...). What the set says is checked by the control plane's own
// rules only: resource.Validate on backendset.ToProto of the decoded set, whose error names a wire
// field that is mapped back to the file's key and its line (the wire's address and port are the
// file's address, whose message says "host of" or "port of" it; a duplicate id also gets the line
// of the first). So the file, the admin API and the data plane refuse the same things in the same
// words, and as on the wire a weight, count or percentage of 0 means its default. Validate stops
// at a set's first error, so a set gets one such error at a time; a set whose form is wrong gets
// only those errors. A valid set is kept as backendset.FromProto makes it (a zero weight is 1),
// the form it reaches the data plane in.
//
// The flags of the commands (server) set the same fields, with the helpers exported here
// (ParseDuration, ParseForwarded, CheckListenAddress, ...), so that a flag and a key are read alike.
package config
