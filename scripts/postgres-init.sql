-- compose.yaml: one database per service (no service reads another's tables).
CREATE DATABASE verimail_user;
CREATE DATABASE verimail_auth;
CREATE DATABASE verimail_email;
