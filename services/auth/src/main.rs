verimail_events::service_main!(verimail_auth, "auth-service", "auth.db", verimail_auth::commands);
