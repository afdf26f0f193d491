// Package tlsterm terminates TLS for the listeners of a worker: the certificates chosen by the
// name a client asks for and reloaded from their files while serving. It is a library of the data
// plane: the worker wires it to its listeners, the supervisor to its state directory; it knows
// nothing of either.
//
// # Certificates
//
// A Store is built from a list of pairs (certificate file, key file). Each certificate is for the
// DNS names of its subject alternative names; its common name is not used (clients ignore it
// too), and neither are its IP addresses. For a handshake the Store chooses:
//
//  1. the certificate for exactly the name the client sent (SNI), compared without case and
//     without a final dot;
//  2. else the certificate whose wildcard covers it: *.example.com covers a.example.com, not
//     example.com nor a.b.example.com (RFC 6125 §6.4.3);
//  3. else the first pair, the default: for a client that sent no name (one that dialed an IP
//     address sends none: SNI cannot carry an address) or a name no certificate is for. Such a
//     client is served the default and its own verification decides; xlb does not refuse it.
//
// When several pairs are for one name, the first in the list wins. A certificate with no DNS name
// can only serve as the default.
//
// # Reloads
//
// Reload re-reads every file and publishes the new set behind one atomic pointer, which the
// handshake loads without a lock: a handshake sees the old set or the new one. A pair whose file
// is missing, is not PEM, does not parse, or whose key does not match its certificate keeps
// serving the certificate it had, and the error names the file; the other pairs take their new
// files. NewStore, which has no previous certificate, refuses a pair that does not load.
//
// Watch polls: every second (StoreConfig.Poll) it stats each file and reloads when one changed
// (its inode, size, mtime or ctime). Polling rather than inotify because the ways certificates
// are deployed replace files by rename or swap a symlink to a directory (Kubernetes secret
// volumes), which an inotify watch on the file misses (it watches the old inode) and one on the
// directory must be taught to follow; a stat follows symlinks, and costs two system calls per
// pair per second. A certificate is then served at most a second after it is written. Deploy a
// pair by writing each file whole and renaming it into place, the certificate and the key in
// either order: between the two the files do not match, the reload says so and the old pair
// serves on, and the second rename reloads the pair. A file rewritten in place, to the same size
// within one tick of the file system's clock, can go unseen until its next change. A file that
// failed is not read again until it changes, so a broken file is logged once.
//
// # The server config
//
// ServerConfig is the tls.Config of a listener: TLS 1.2 at least (1.3 preferred), ALPN http/1.1,
// Go's default cipher suites and key exchanges (which follow the Go release: no RSA key exchange,
// 3DES, RC4 or CBC with SHA-256; the post-quantum X25519MLKEM768 first), session tickets on. A
// client that offers ALPN without http/1.1 (h2 alone: a gRPC client, say) is refused with the
// no_application_protocol alert, as RFC 7301 says; a client that offers no ALPN is served.
//
// # Session tickets
//
// Go's TLS server resumes sessions only by tickets (it keeps no session cache), encrypted with
// keys of its own made at random per tls.Config. For a client to resume on whichever worker it
// reaches, and across an upgrade, every worker takes its keys from one file the supervisor keeps:
// STATE_DIR/ticket-keys, mode 0600, replaced whole by rename (internal/atomicfile). It is text: a
// line "xlb-ticket-keys v1 N", then N lines "UNIX-SECONDS HEX-KEY", the current key (which
// encrypts new tickets) first, then the previous ones (which still decrypt), newest first.
//
// The supervisor's TicketRotator is the file's only writer. Rotate(now) adds a new current key
// when the current one is RotationPolicy.Period old (12h by default) and drops a previous key
// once Keep keys are newer (3 by default: the current and two before it) or once (Keep-1) ×
// Period has passed since the key after it was made. So a ticket stays valid at least (Keep-1) ×
// Period after it was issued: 24h by default (a client back the next day resumes), and at most
// Keep × Period, 36h, when rotations come on time. A key thus lives 36h at most, in the workers
// and in the file, which bounds what its theft exposes: the sessions whose tickets it encrypted
// in the Period it was current. A supervisor that was down longer makes one new key and drops the keys whose
// window ended meanwhile. The window is measured by the supervisor's clock: a clock set back by
// more than a Period makes a new key at once, which can end the window of older keys early. Call
// Rotate before starting the workers, then every minute or so; the key times in the file make a
// new supervisor (after an upgrade or a restart) go on where the old one was. Only one
// supervisor may rotate a file at a time, since Rotate reads and rewrites it: in an upgrade the
// old one stops rotating when it hands over (two rotating at once lose one's new key, and the
// tickets under it get a full handshake; nothing fails). A file Rotate cannot
// parse is replaced by one new key (it says so, for the log): sessions under the lost keys do a
// full handshake, and workers do not stay on stale keys.
//
// A worker's TicketLoader sets the file's keys on every listener's tls.Config
// (SetSessionTicketKeys, the current first); call Load before serving, and run Watch, which
// polls the file every second as the certificate Watch does. A worker never makes keys of its own
// once it has read the file: a file that is missing, unreadable or corrupt is an error naming it, and the
// keys in force stay. Before the first good Load they are Go's keys of that process, so a worker
// started with no file, or a corrupt one, resumes only its own sessions until the file is good.
//
// What resumption saves differs by version (BenchmarkHandshake, both ends in one process, on the
// 2-core machine of this change): a TLS 1.2 resumption skips the key exchange and the certificate,
// about 3× the handshakes per second of a full one; a TLS 1.3 resumption still makes a fresh key
// exchange (X25519MLKEM768 by default, for forward secrecy) and skips only the certificate's
// signature and its verification, about 1.2×.
//
// A caller must never modify a certificate returned by GetCertificate: generations share them.
package tlsterm
