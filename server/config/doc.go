// Package config is what `xlb run` and `xlb dataplane` serve: the Config type, every zero field of
// which means a documented default, and the YAML configuration file that makes one (Parse, Load),
// checked whole before anything is served. A file's errors name the line and the key
// ("xlb.yaml:9: backend_sets[0].backends[1].weight: want an integer >= 1, got \"x\""), at most 20
// of them, sorted; a set of backends is checked by the control plane's own rules
// (controlplane/resource), so that the file, the admin API and the data plane refuse the same
// things in the same words. server/backendset.ToProto turns a file's set into the control plane's.
//
// The flags of the commands (server) set the same fields, with the helpers exported here
// (ParseDuration, ParseForwarded, CheckListenAddress, ...), so that a flag and a key are read alike.
package config
