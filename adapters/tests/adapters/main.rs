//! The adapters' tests, one binary (one link): the payment adapter (`payments`) and the ticket-file
//! and email adapters (`tickets`), each as a real process beside a real broker and boxoffice
//! serving in the test process.

mod payments;
mod support;
mod tickets;
