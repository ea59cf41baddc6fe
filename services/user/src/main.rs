verimail_events::service_main!(verimail_user, "user-service", "user.db");
