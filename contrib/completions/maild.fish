complete -c maild -l config -d 'TOML file with any of these settings; flags beat it' -r -F
complete -c maild -l data -d 'The store; backup range files go to DIR/backup/. [default: ./maild-data]' -r -F
complete -c maild -l hostname -d 'Name in the greeting, Received header and replies. [default: the system host name]' -r
complete -c maild -l domain -d 'A domain delivered locally (repeatable). [default: localhost]' -r
complete -c maild -l smtp -d 'SMTP listener; port 0 picks a free port. [default: 127.0.0.1:2525]' -r
complete -c maild -l pop3 -d 'POP3 listener. [default: 127.0.0.1:1100]' -r
complete -c maild -l submission -d 'Submission listener: SMTP with AUTH required; authenticated users may send to any domain (relayed by MX lookup). [default: off]' -r
complete -c maild -l smtps -d 'Submission over implicit TLS (RFC 8314, port 465): TLS from the first byte, then as --submission. Needs --tls-cert. [default: off]' -r
complete -c maild -l pop3s -d 'POP3 over implicit TLS (port 995). Needs --tls-cert. [default: off]' -r
complete -c maild -l metrics -d 'Prometheus metrics over HTTP (`GET /metrics`) on this address. [default: off]' -r
complete -c maild -l resolver -d 'DNS server for MX lookups when relaying. [default: the system\'s /etc/resolv.conf]' -r
complete -c maild -l mx-port -d 'Port of the MX hosts mail is relayed to (a lab may run them elsewhere). [default: 25]' -r
complete -c maild -l command-timeout -d 'Seconds an SMTP client has to send the next valid command. [default: 300]' -r
complete -c maild -l pop3-timeout -d 'Seconds a POP3 client may stay idle (RFC 1939 §3: at least 600). [default: 600]' -r
complete -c maild -l max-message-size -d 'Largest message accepted, advertised as EHLO SIZE. [default: 26214400]' -r
complete -c maild -l max-connections -d 'Most client connections at once, over all listeners; more get 421. [default: 1000]' -r
complete -c maild -l max-listener-connections -d 'Most connections one listener may hold, so one port cannot lock out the others. [default: three quarters of --max-connections]' -r
complete -c maild -l max-client-connections -d 'Most connections one client address (an IPv6 /64) may hold on one listener. [default: half of --max-connections, as Postfix\'s anvil]' -r
complete -c maild -l max-data-in-flight -d 'Bytes of message data held in memory over all sessions at once; past it, new messages get 452 until memory frees up. [default: 268435456]' -r
complete -c maild -l cache-size -d 'Memory for the store\'s page cache (recent records; all are on disk too). [default: 16777216]' -r
complete -c maild -l peer -d 'A peer server that owns DOMAIN (repeatable): mail for it is forwarded there' -r
complete -c maild -l retry-min -d 'First retry of a deferred forward after this long (doubling each time). [default: 5s]' -r
complete -c maild -l retry-max -d 'Longest wait between retries. [default: 10m]' -r
complete -c maild -l queue-lifetime -d 'How long a message may wait for a peer before it bounces. [default: 5d]' -r
complete -c maild -l remember-peers -d 'How long a domain a discovered peer announced still counts as that peer\'s after it was last heard (its mail waits for it meanwhile). [default: 7d]' -r
complete -c maild -l min-free-space -d 'Free bytes to keep on the store\'s file system; below it new mail gets 452. [default: 33554432]' -r
complete -c maild -l store-timeout -d 'Seconds a store commit or flush may take before maild gives up on the store: it answers 451 to waiting clients and exits (status 75) for a restart. [default: 60]' -r
complete -c maild -l shutdown-grace -d 'Seconds sessions get to finish after SIGTERM/SIGINT. [default: 30]' -r
complete -c maild -l discover-interface -d 'An interface (name or address) that --discover may use (repeatable); no other sees mDNS' -r
complete -c maild -l discover-secret -d 'A file holding a key shared by the servers that discover each other (at least 16 bytes): announcements are signed with it, and unsigned ones ignored' -r -F
complete -c maild -l tls-cert -d 'PEM certificate chain; with --tls-key it enables STARTTLS (SMTP) and STLS (POP3)' -r -F
complete -c maild -l tls-key -d 'PEM private key for --tls-cert' -r -F
complete -c maild -l discover -d 'Find peers by mDNS (`_maild._tcp.local.`) and announce this server; needs --discover-interface'
complete -c maild -s h -l help -d 'Print help'
complete -c maild -s V -l version -d 'Print version'
