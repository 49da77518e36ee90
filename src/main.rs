fn main() {
    eprintln!("nemo: being written");
}
